"""WAN scenarios, part 1: the link as a client sees it, and whole-image pulls across it.

- ``wan_link``: what the emulation delivers, measured from the region: request round trip on a
  kept-alive connection (configured: 2 x ``wan_delay_ms``), a new connection's first answer,
  bulk throughput of one download across the link, the relay's own capacity without delay
  (on the upstream's loopback: it must be far above the link rate, or the relay would be the
  bottleneck), and the link's own byte count for that download against its size.
- ``wan_pull``: skopeo pulls a 5-layer image into a fresh ``oci:`` directory through each
  contender, cold (a new image per repetition) then warm; ``direct`` has no cache, so its pull
  is the WAN pull every warm pull is compared with (speed-up = direct's pull / warm pull, same
  repetition). Bytes over the link come from the link's counters (TCP payload, after the link
  went quiet: a background copy that outlives the client counts against the pull that
  caused it).

Every scenario runs with the calling thread inside the region namespace (:mod:`bench.wan`).
"""

from __future__ import annotations

import shutil
import statistics
import time

from bench.params import Params
from bench.results import HIGHER, LOWER, NEUTRAL, Metric, ScenarioRecord
from bench.scenarios.context import Budget, RunContext, Scenario, WanContext
from bench.topologies import KIND_BASELINE, KIND_QUAYSIDE
from harness import skopeo, wanprobe

MB = 1e6


def wan(ctx: RunContext) -> WanContext:
    if not isinstance(ctx, WanContext):
        raise TypeError("a WAN scenario needs the WAN context (bench.wan.run_phase)")
    return ctx


# -- wan_link ------------------------------------------------------------------------------------

_LINK_METRICS = [
    Metric("rtt_ms", "request round trip (kept-alive)", "ms", NEUTRAL),
    Metric("connect_ms", "new connection, first answer", "ms", NEUTRAL),
    Metric("link_mb_s", "one download across the link", "MB/s", NEUTRAL),
    Metric("relay_mb_s", "relay without delay (upstream loopback)", "MB/s", NEUTRAL),
    Metric("upstream_mb_s", "upstream on its loopback", "MB/s", NEUTRAL),
    Metric("payload_ratio", "link payload / body bytes", "x", NEUTRAL),
]


def _link_run(ctx: RunContext, record: ScenarioRecord, budget: Budget) -> None:
    w = wan(ctx)
    blob = w.wan.probe
    assert blob is not None
    path = f"/v2/{blob.repo}/blobs/{blob.digest}"
    for rep in range(ctx.params.wan_repeats):
        budget.check()
        ctx.reporter.step(f"wan_link · probes · run {rep + 1}/{ctx.params.wan_repeats}")
        relay = w.relays["probe"]
        trips = wanprobe.round_trips(relay.url + "/v2/", 10, timeout=budget.cap(10))
        before = w.counters("probe", budget)
        size, secs = wanprobe.download(relay.url + path, timeout=budget.cap(120))
        after = w.counters("probe", budget)
        with w.link.up.entered():
            fast_size, fast_secs = wanprobe.download(w.fast_relay.url + path, timeout=30)
            up_size, up_secs = wanprobe.download(w.upstream.url + path, timeout=30)
        delta = after - before
        run: dict[str, object] = {
            "rep": rep,
            "rtt_ms": trips.median * 1000,
            "rtt_all_ms": [round(t * 1000, 2) for t in trips.requests],
            "connect_ms": trips.first * 1000,
            "link_mb_s": size / secs / MB,
            "relay_mb_s": fast_size / fast_secs / MB,
            "upstream_mb_s": up_size / up_secs / MB,
            "payload_ratio": delta.payload_down() / size,
            "link": delta.to_dict(),
        }
        if size != blob.size or fast_size != blob.size or up_size != blob.size:
            record.add_error("direct", f"probe sizes {size}/{fast_size}/{up_size} != {blob.size}")
        record.add_run("direct", run)
        ctx.reporter.advance()
    configured = 2 * ctx.params.wan_delay_ms
    rtts = [float(r["rtt_ms"]) for r in record.runs.get("direct", [])]
    if rtts:
        record.notes.append(
            f"configured RTT {configured:g} ms, measured median {statistics.median(rtts):.1f} ms "
            f"({statistics.median(rtts) / configured - 1:+.1%}); link rate "
            f"{ctx.params.wan_rate_mbit:g} Mbit/s = {ctx.params.wan_rate_mbit / 8:.1f} MB/s on "
            f"the wire, {ctx.params.wan_rate_mbit / 8 * 1448 / 1514:.1f} MB/s of TCP payload"
        )


WAN_LINK = Scenario(
    name="wan_link",
    title="WAN link check (what a client in the region sees)",
    description=(
        "Probes from the region namespace to the upstream across the emulated link: request "
        "round trip on a kept-alive connection, a new connection's first answer (connect "
        "round trip + request), one blob download across the link, the delaying relay's own "
        "throughput without delay and the upstream's, both on the upstream's loopback (the "
        "relay must not be the bottleneck), and link payload bytes / body bytes."
    ),
    metrics=lambda p: list(_LINK_METRICS),
    steps=lambda ctx: ctx.params.wan_repeats,
    run=_link_run,
    params=lambda p: {
        "rate_mbit": p.wan_rate_mbit,
        "delay_ms_each_way": p.wan_delay_ms,
        "configured_rtt_ms": 2 * p.wan_delay_ms,
        "probe_blob_size": p.wan_probe_size,
        "repeats": p.wan_repeats,
    },
)


# -- wan_pull -------------------------------------------------------------------------------------

_PULL_METRICS = [
    Metric("cold_s", "cold pull", "s", LOWER),
    Metric("warm_s", "warm pull", "s", LOWER),
    Metric("link_ratio", "link payload / image size, cold pull", "x", LOWER),
    Metric("speedup", "direct WAN pull / warm pull", "x", HIGHER),
    Metric("warm_link_kb", "link payload, warm pull", "kB", LOWER),
]


def _reps(p: Params, kind: str) -> int:
    """Repetitions of a contender: ours and the baseline all, peers ``wan_peer_repeats``."""
    if kind in (KIND_QUAYSIDE, KIND_BASELINE):
        return p.wan_repeats
    return min(p.wan_repeats, p.wan_peer_repeats)


def _pull_steps(ctx: RunContext) -> int:
    return sum(_reps(ctx.params, c.kind) for c in ctx.contenders_for("wan_pull"))


def _pull(ctx: WanContext, host: str, tag: str, target: str, budget: Budget) -> float:
    dest = ctx.workdir / "pulls" / target
    start = time.monotonic()
    try:
        skopeo.pull_to_layout(host, ctx.wan.pulls[0].repo, tag, dest, timeout=budget.cap(600))
        return time.monotonic() - start
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def _pull_run(ctx: RunContext, record: ScenarioRecord, budget: Budget) -> None:
    w = wan(ctx)
    p = ctx.params
    contenders = ctx.contenders_for("wan_pull")
    for rep, image in enumerate(w.wan.pulls[: p.wan_repeats]):
        direct_s: float | None = None
        for contender in contenders:
            reps = _reps(p, contender.kind)
            if rep >= reps:
                continue
            budget.check()
            ctx.reporter.step(f"wan_pull · {contender.name} · run {rep + 1}/{reps}")
            run: dict[str, object] = {"rep": rep, "image": image.digest, "size": image.total_size}
            try:
                mark = w.counters(contender.name, budget)
                cold = _pull(w, contender.host(0), image.tag, f"{contender.name}-{rep}-c", budget)
                after = w.counters(contender.name, budget)
                run.update(
                    cold_s=cold,
                    link_ratio=(after - mark).payload_down() / image.total_size,
                    link=(after - mark).to_dict(),
                )
                if contender.name == "direct":
                    direct_s = cold  # no cache: every pull crosses the WAN
                else:
                    warm = _pull(
                        w, contender.host(0), image.tag, f"{contender.name}-{rep}-w", budget
                    )
                    end = w.counters(contender.name, budget)
                    run.update(warm_s=warm, warm_link_kb=(end - after).payload_down() / 1000)
                    if direct_s:
                        run["speedup"] = direct_s / warm
            except skopeo.SkopeoError as exc:
                record.add_error(contender.name, str(exc))
            record.add_run(contender.name, run)
            ctx.reporter.advance()


WAN_PULL = Scenario(
    name="wan_pull",
    title="Image pull across the WAN (skopeo)",
    description=(
        "skopeo copies a 5-layer image into a fresh oci: directory through each contender in "
        "the region, cold (a new image per repetition) then warm. direct has no cache: its pull "
        "crosses the WAN every time and is what the warm pulls are compared with (speed-up, "
        "same repetition). Link payload from the link's own counters once it went quiet. "
        "Peers run fewer repetitions (a cold pull through the reference proxy crosses the WAN "
        "twice)."
    ),
    metrics=lambda p: list(_PULL_METRICS),
    steps=_pull_steps,
    run=_pull_run,
    params=lambda p: {
        "layers": len(p.wan_layer_sizes),
        "image_mib": sum(p.wan_layer_sizes) / 2**20,
        "repeats": p.wan_repeats,
        "peer_repeats": min(p.wan_repeats, p.wan_peer_repeats),
        "rate_mbit": p.wan_rate_mbit,
        "rtt_ms": 2 * p.wan_delay_ms,
    },
)
