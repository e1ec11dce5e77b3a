"""The WAN phase of a run: the upstream behind an emulated WAN link, every contender in the region.

::

    region namespace                               upstream namespace
    loadgen, skopeo, probes (this thread)          docker-registry on its loopback (seeded here)
    direct ─────────────────┐                      one wanrelay per contender (+ probes):
    reference-proxy, nginx-cache,  ── veth, tbf ── +delay each way, slow start, on the link
    quayside-1, quayside-3 + redis ┘               address; its port's bytes counted apart
                                                   wanrelay without delay (capacity check)

:func:`run_phase` builds all of it (:class:`harness.wanlink.WanLink`, ``tbf`` at
``Params.wan_rate_mbit`` each way, :class:`harness.wanrelay.WanRelay` with
``Params.wan_delay_ms``), seeds the upstream from inside its own namespace (no seeding bytes
cross the link), starts the contenders and a load generator inside the region namespace, runs
the WAN scenarios with this thread inside the region namespace, and tears everything down.

Guarantees:
- when namespaces cannot be made here (not root, no iproute2, the kernel refuses), every WAN
  scenario is recorded as skipped with that reason; nothing is measured or invented;
- leftovers of earlier runs that died (namespaces named with the bench prefix whose owner
  process is gone) are swept first; this run's namespaces, and every process inside them, are
  removed in a ``finally``, also when a contender crashed, a scenario failed, on Ctrl-C and on
  SIGTERM/SIGHUP (:mod:`bench.stopping`; a signal during the teardown waits for its end);
- the thread leaves the namespaces on every exit path (:meth:`harness.netns.Netns.entered`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

from bench import stopping
from bench.dataset import Dataset, seed_wan
from bench.loadgen import LoadGenerator
from bench.params import WAN_CONTENDERS, Params
from bench.scenarios.context import Reporter, WanContext
from bench.topologies import Topology
from harness import netns
from harness.registry import DockerRegistry
from harness.wanlink import WanLink, WanRelay

RunScenarios = Callable[[WanContext, Sequence[str]], None]
SkipScenarios = Callable[[Sequence[str], str], None]


def _contenders(params: Params) -> list[str]:
    """The WAN contenders to start (peers only when they get repetitions)."""
    peers = ("reference-proxy", "nginx-cache") if params.wan_peer_repeats < 1 else ()
    return [c for c in params.contenders if c in WAN_CONTENDERS and c not in peers]


def run_phase(
    params: Params,
    names: Sequence[str],
    workdir: Path,
    reporter: Reporter,
    results: dict[str, Any],
    run_scenarios: RunScenarios,
    skip: SkipScenarios,
) -> None:
    """Run the WAN scenarios ``names`` (see the module docstring); results go through
    ``run_scenarios``/``skip`` and into ``results["wan"]``."""
    reason = netns.unavailable()
    if reason is not None:
        skip(names, reason)
        results["wan"] = {"skipped": reason}
        return
    swept = netns.sweep()
    resource_tracker.ensure_running()  # started here, not inside a namespace torn down later
    link = WanLink(rate_mbit=params.wan_rate_mbit)
    closers: list[Callable[[], None]] = []
    info: dict[str, Any] = {"swept_leftovers": swept}
    results["wan"] = info
    try:
        reporter.step("WAN: creating namespaces and the link")
        try:
            link.create()
        except netns.NetnsError as exc:
            skip(names, f"cannot build the WAN link here: {exc}")
            info["skipped"] = str(exc)
            return
        info["link"] = link.describe()
        workdir.mkdir(parents=True, exist_ok=True)
        with link.up.entered():
            reporter.step("WAN: starting the upstream and the relay")
            upstream = DockerRegistry(workdir=workdir / "upstream")
            closers.append(upstream.close)
            upstream.start()
            relays = {
                name: WanRelay(
                    f"{link.up_addr}:0",
                    upstream.host,
                    delay_ms=params.wan_delay_ms,
                    netns=link.up,
                    workdir=workdir / f"relay-{name}",
                    name=f"wanrelay-{name}",
                )
                for name in ("probe", *_contenders(params))
            }
            fast = WanRelay(
                "127.0.0.1:0",
                upstream.host,
                delay_ms=0,
                slow_start=False,
                netns=link.up,
                workdir=workdir / "relay-nodelay",
                name="wanrelay-nodelay",
            )
            for relay in (*relays.values(), fast):
                closers.append(relay.close)
                relay.launch()
            for name, relay in relays.items():
                relay.wait_ready()
                link.track(name, relay.port)
            fast.wait_ready()
            reporter.step("WAN: seeding the upstream (inside its namespace)")
            dataset = seed_wan(upstream.url, params, frozenset(names))
        info["relays"] = {n: r.url for n, r in relays.items()}
        info["delay_ms_each_way"] = params.wan_delay_ms
        info["link"] = link.describe()
        info["dataset"] = dataset.to_dict()
        with link.region.entered():
            reporter.step("WAN: starting the contenders in the region")
            topology = Topology(
                workdir / "region",
                edge_cache_size=params.edge_cache_size,
                wan_upstreams={n: r.url for n, r in relays.items()},
                wan_scenarios=frozenset(names),
            )
            closers.append(topology.close)
            topology.registry = upstream
            topology.start_contenders(_contenders(params))
            info["contenders"] = {n: c.describe() for n, c in topology.contenders.items()}
            info["contender_failures"] = dict(topology.failures)
            for name, desc in info["contenders"].items():
                results["contenders"].setdefault(name, desc)
            loadgen = LoadGenerator(processes=2)  # its workers live in the region too
            closers.append(loadgen.close)
            loadgen.start()
            ctx = WanContext(
                params,
                topology,
                Dataset(),
                loadgen,
                workdir,
                reporter,
                link=link,
                relays=relays,
                fast_relay=fast,
                upstream=upstream,
                wan=dataset,
            )
            run_scenarios(ctx, names)
            info["link_total"] = link.counters().to_dict()
    finally:
        with stopping.teardown():  # a SIGTERM now waits until the namespaces are gone
            try:
                while closers:
                    closer = closers.pop()
                    try:
                        closer()
                    except Exception as exc:  # teardown goes on; the namespaces go below
                        info.setdefault("teardown_errors", []).append(
                            f"{type(exc).__name__}: {exc}"
                        )
            finally:  # also when a second Ctrl-C cut the closers short
                link.close()
