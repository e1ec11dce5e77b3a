"""The emulated WAN itself (harness.netns, harness.wanlink, harness.wanrelay, bench.wan).

Not timed benchmarks: these check that the topology the WAN scenarios stand on is what they
claim. Namespaces are created and removed (with what runs inside), the RTT a client in the
region measures is the configured one within 20 %, the rate limit holds, the link's counters
count what crossed it, the relay cuts where it is told to, and the bench's WAN phase removes
its namespaces even when a contender crashed mid-run. Skipped (with the reason) where network
namespaces cannot be made, e.g. not root.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.params import Params
from harness import netns, wanprobe
from harness.bigblobs import push_large_blob, random_blob
from harness.procs import Process, wait_until
from harness.registry import DockerRegistry
from harness.wanlink import WanLink, WanRelay

pytestmark = [pytest.mark.slow]

_REASON = netns.unavailable()
if _REASON is None and not Path("/usr/bin/docker-registry").exists():
    _REASON = "docker-registry is not installed (make sysdeps)"
if _REASON is not None:
    pytestmark.append(pytest.mark.skip(reason=_REASON))

MiB = 1024 * 1024
DELAY_MS = 25.0
BLOB = 8 * MiB


class Wan:
    """A link with docker-registry and two relays (delayed, and without delay) upstream."""

    def __init__(self, workdir: Path) -> None:
        self.link = WanLink(rate_mbit=200).create()
        self.closers: list[Any] = []
        with self.link.up.entered():
            self.registry = DockerRegistry(workdir=workdir / "registry")
            self.closers.append(self.registry.close)
            self.registry.start()
            self.digest = asyncio.run(self._push(random_blob(BLOB, 5)))
            self.relay = WanRelay(
                f"{self.link.up_addr}:0",
                self.registry.host,
                delay_ms=DELAY_MS,
                netns=self.link.up,
                workdir=workdir / "relay",
            )
            self.fast = WanRelay(
                "127.0.0.1:0",
                self.registry.host,
                delay_ms=0,
                slow_start=False,
                netns=self.link.up,
                workdir=workdir / "fast",
                name="fast",
            )
            for relay in (self.relay, self.fast):
                self.closers.append(relay.close)
                relay.start()
        self.link.track("relay", self.relay.port)
        self.blob_path = f"/v2/t/blob/blobs/{self.digest}"

    async def _push(self, data: bytes) -> str:
        async with aiohttp.ClientSession() as session:
            return await push_large_blob(session, self.registry.url, "t/blob", data)

    def close(self) -> None:
        for closer in reversed(self.closers):
            closer()
        self.link.close()


@pytest.fixture(scope="module")
def wan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wan]:
    w = Wan(tmp_path_factory.mktemp("wan"))
    try:
        yield w
    finally:
        w.close()


def _names() -> set[str]:
    return set(netns.list_names())


def test_link_namespaces_are_created_and_removed_with_what_runs_inside() -> None:
    link = WanLink()
    try:
        link.create()
        assert {link.up.name, link.region.name} <= _names()
        for ns, dev in ((link.up, link.up_dev), (link.region, link.region_dev)):
            out = netns.ip("-n", ns.name, "addr", "show", "dev", dev)
            assert "state UP" in out or "LOWER_UP" in out
        # the link-local addresses exist only inside the namespaces, not on this host
        assert link.up_addr not in netns.ip("addr", "show")
        sleeper = Process(link.up.argv(["sleep", "60"]), name="sleeper").start()
        assert wait_until(lambda: sleeper.pid in link.up.pids(), 5)
    finally:
        link.close()
    assert not {link.up.name, link.region.name} & _names()
    assert wait_until(lambda: not sleeper.running, 5), "a process inside survived the teardown"


def test_sweep_removes_leftovers_of_a_dead_owner_and_keeps_live_ones() -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    assert not Path(f"/proc/{dead_pid}").exists()
    leftover = f"{netns.PREFIX}-{dead_pid}-0-up"
    live = netns.Netns("rg").create()  # owned by this (live) process
    try:
        netns.ip("netns", "add", leftover)
        removed = netns.sweep()
        assert leftover in removed
        assert leftover not in _names()
        assert live.name in _names()
    finally:
        netns.delete_named(leftover)
        live.delete()


def test_entered_switches_only_for_the_body_and_back() -> None:
    link = WanLink().create()
    try:
        before = os.readlink("/proc/thread-self/ns/net")
        with link.region.entered():
            assert os.readlink("/proc/thread-self/ns/net") != before
            # the region sees its side of the link, not this host's interfaces
            assert link.region_addr in netns.ip("addr", "show")
        assert os.readlink("/proc/thread-self/ns/net") == before
        with pytest.raises(RuntimeError), link.up.entered():
            raise RuntimeError("boom")
        assert os.readlink("/proc/thread-self/ns/net") == before
    finally:
        link.close()


def test_rtt_a_client_measures_is_the_configured_one(wan: Wan) -> None:
    configured = 2 * DELAY_MS / 1000
    with wan.link.region.entered():
        trips = wanprobe.round_trips(wan.relay.url + "/v2/", 15)
    assert abs(trips.median / configured - 1) <= 0.2, trips
    # a new connection pays the set-up round trip too (no netem: the relay adds it)
    assert trips.first >= 0.8 * 2 * configured, trips
    # nothing but the relay delays: the upstream answers on its loopback at once
    with wan.link.up.entered():
        local = wanprobe.round_trips(wan.registry.url + "/v2/", 5)
    assert local.median < 0.2 * configured, local


def test_rate_limit_holds_and_the_relay_is_not_the_bottleneck(wan: Wan) -> None:
    link_rate = 200e6 / 8
    with wan.link.region.entered():
        size, secs = wanprobe.download(wan.relay.url + wan.blob_path)
    assert size == BLOB
    assert size / secs <= 1.05 * link_rate, f"{size / secs / 1e6:.1f} MB/s over a 25 MB/s link"
    with wan.link.up.entered():
        fast_size, fast_secs = wanprobe.download(wan.fast.url + wan.blob_path)
    assert fast_size == BLOB
    assert fast_size / fast_secs >= 2 * link_rate, f"relay alone {fast_size / fast_secs / 1e6:.0f}"


def test_link_counters_count_what_crossed(wan: Wan) -> None:
    with wan.link.region.entered():
        wanprobe.download(wan.relay.url + "/v2/")  # warm the connection path
        before, mine = wan.link.counters(), wan.link.counters("relay")
        size, _secs = wanprobe.download(wan.relay.url + wan.blob_path)
        assert wait_until(lambda: wan.link.counters().rx_bytes - before.rx_bytes >= size, 5)
        total, tracked = wan.link.counters() - before, wan.link.counters("relay") - mine
    # TCP payload = the HTTP response: the body plus a few hundred bytes of head
    for counted in (total.payload_down(), tracked.payload_down()):
        assert size <= counted <= size + 4096, (counted, size)
    assert total.rx_packets > 0 and total.tx_bytes > 0 and total.tbf_sent_bytes >= size
    assert total.payload_up() < 4096  # the request and ACKs went the other way


def test_relay_cuts_the_connection_after_the_armed_bytes(wan: Wan) -> None:
    after = 3 * MiB
    wan.relay.arm_cut(after)
    with wan.link.region.entered(), pytest.raises(wanprobe.ProbeError):
        wanprobe.download(wan.relay.url + wan.blob_path)  # reset mid-body
    cuts = wan.relay.events("cut")
    assert cuts and cuts[-1]["down_bytes"] == after
    with wan.link.region.entered():  # disarmed after one cut: the next download is whole
        size, _ = wanprobe.download(wan.relay.url + wan.blob_path)
    assert size == BLOB


def test_wan_phase_tears_down_after_a_contender_crash(tmp_path: Path) -> None:
    from bench import wan as wan_phase

    params = Params.quick().with_overrides(contenders=("quayside-1",), scenarios=("wan_link",))
    seen: dict[str, Any] = {}

    class Reporter:
        def step(self, text: str) -> None: ...

        def advance(self, steps: int = 1) -> None: ...

    def crash(ctx: Any, names: Any) -> None:
        seen["namespaces"] = [ctx.link.up.name, ctx.link.region.name]
        seen["processes"] = [p for c in ctx.topology.contenders.values() for p in c.processes()]
        seen["relays"] = [r.process for r in ctx.relays.values()]
        ctx.topology.contenders["quayside-1"].processes()[0].kill()  # the contender crashes
        raise RuntimeError("scenario failed after the crash")

    results: dict[str, Any] = {"contenders": {}, "scenarios": {}}
    own = os.readlink("/proc/thread-self/ns/net")
    with pytest.raises(RuntimeError, match="after the crash"):
        wan_phase.run_phase(
            params, ["wan_link"], tmp_path, Reporter(), results, crash, lambda n, r: None
        )
    assert seen["namespaces"] and not set(seen["namespaces"]) & _names()
    for proc in [*seen["processes"], *seen["relays"]]:
        assert not proc.running, proc
    assert os.readlink("/proc/thread-self/ns/net") == own  # the thread is back home
