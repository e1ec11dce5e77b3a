"""An emulated WAN link: two network namespaces joined by a veth pair with a rate limit.

::

    region ns  [rg veth 169.254.77.2] ==== tbf RATE ==== [up veth 169.254.77.1]  upstream ns

Both namespaces are created by :meth:`WanLink.create` (see :mod:`harness.netns` for names and
teardown); the link-local addresses exist only inside them. A ``tbf`` qdisc limits each
direction to ``rate_mbit`` (the upstream side's egress is the download direction). The kernels
here have no ``netem``, so the link itself adds no delay: :mod:`harness.wanrelay` does, in the
upstream namespace.

Bytes that crossed the link are read from the link itself: the region-side veth's own counters
(``ip -s link``: what arrived from upstream, what left for it), the ``tbf`` statistics (sent,
dropped, overlimits), and per tracked source port (:meth:`WanLink.track`: one relay per
contender) the statistics of an ``htb`` class inside the ``tbf`` (it counts, it does not
shape), so bytes a contender pulls late are never counted against another. :meth:`LinkCounters.payload_down` subtracts one Ethernet + IPv4 +
TCP header per packet (each counted packet, GSO or not, carries exactly one), which leaves the
TCP payload: HTTP bytes, which is what "one copy of the image" compares with.

:class:`WanRelay` launches the delaying relay (:mod:`harness.wanrelay`) inside a namespace and
arms its cuts.

Guarantees: :meth:`WanLink.close` deletes both namespaces (their processes are killed first)
and never raises; ``with WanLink(...) as link`` closes on every exit path.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.netns import Netns, ip
from harness.procs import wait_until
from harness.service import ListeningLineService

UP_ADDR = "169.254.77.1"
REGION_ADDR = "169.254.77.2"
_PREFIX_LEN = 30
_ETH_IP = 14 + 20


@dataclass(frozen=True)
class LinkCounters:
    """Counters of the region-side veth (``rx`` = from upstream) and the upstream ``tbf``."""

    rx_bytes: int = 0
    rx_packets: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tbf_sent_bytes: int = 0
    tbf_dropped: int = 0
    tbf_overlimits: int = 0
    header_bytes: int = 66  # per packet: Ethernet 14 + IPv4 20 + TCP 20 (+ 12 timestamps)

    def __sub__(self, other: LinkCounters) -> LinkCounters:
        return LinkCounters(
            rx_bytes=self.rx_bytes - other.rx_bytes,
            rx_packets=self.rx_packets - other.rx_packets,
            tx_bytes=self.tx_bytes - other.tx_bytes,
            tx_packets=self.tx_packets - other.tx_packets,
            tbf_sent_bytes=self.tbf_sent_bytes - other.tbf_sent_bytes,
            tbf_dropped=self.tbf_dropped - other.tbf_dropped,
            tbf_overlimits=self.tbf_overlimits - other.tbf_overlimits,
            header_bytes=self.header_bytes,
        )

    def payload_down(self) -> int:
        """TCP payload that arrived in the region from upstream (bytes minus headers)."""
        return max(0, self.rx_bytes - self.header_bytes * self.rx_packets)

    def payload_up(self) -> int:
        """TCP payload that left the region for upstream."""
        return max(0, self.tx_bytes - self.header_bytes * self.tx_packets)

    def to_dict(self) -> dict[str, int]:
        return {
            "rx_bytes": self.rx_bytes,
            "rx_packets": self.rx_packets,
            "tx_bytes": self.tx_bytes,
            "tx_packets": self.tx_packets,
            "payload_down": self.payload_down(),
            "payload_up": self.payload_up(),
            "tbf_sent_bytes": self.tbf_sent_bytes,
            "tbf_dropped": self.tbf_dropped,
        }


class WanLink:
    """The two namespaces, the veth pair and the rate limit (see the module docstring)."""

    def __init__(
        self,
        *,
        rate_mbit: float = 200.0,
        burst_bytes: int = 256 * 1024,
        queue_ms: float = 100.0,
        prefix: str = "qsb",
    ) -> None:
        self.rate_mbit = rate_mbit
        self.burst_bytes = burst_bytes
        self.queue_ms = queue_ms
        # what the tbf queue may hold: queue_ms of the rate, plus a burst
        self.queue_bytes = int(rate_mbit * 1e6 / 8 * queue_ms / 1000) + burst_bytes
        self._classes: dict[str, str] = {}
        self.up = Netns("up", prefix=prefix)
        self.region = Netns("rg", prefix=prefix)
        suffix = self.up.name.split("-")[1][-6:] + self.up.name.split("-")[2][-2:]
        self.up_dev = f"{prefix}u{suffix}"[:15]
        self.region_dev = f"{prefix}r{suffix}"[:15]
        self.up_addr = UP_ADDR
        self.region_addr = REGION_ADDR
        self.header_bytes = 66

    def create(self) -> WanLink:
        """Make both namespaces, the veth pair, addresses and the ``tbf`` qdiscs.

        Raises:
            harness.netns.NetnsError: a step failed (what was made is deleted again).
        """
        try:
            self.up.create()
            self.region.create()
            ip("link", "add", self.up_dev, "netns", self.up.name, "type", "veth",
               "peer", "name", self.region_dev, "netns", self.region.name)  # fmt: skip
            for ns, dev, addr in (
                (self.up, self.up_dev, self.up_addr),
                (self.region, self.region_dev, self.region_addr),
            ):
                ip("-n", ns.name, "addr", "add", f"{addr}/{_PREFIX_LEN}", "dev", dev)
                ip("-n", ns.name, "link", "set", dev, "up")
                ip("tc", "-n", ns.name, "qdisc", "add", "dev", dev, "root", "handle", "1:",
                   "tbf", "rate", f"{self.rate_mbit:g}mbit", "burst", str(self.burst_bytes),
                   "limit", str(self.queue_bytes))  # fmt: skip
            # downstream: an htb inside the tbf, only to count bytes per tracked port
            self._tc("qdisc", "add", "dev", self.up_dev, "parent", "1:1", "handle", "10:",
                     "htb", "default", "1")  # fmt: skip
            self._add_class("10:1")
            self.header_bytes = _ETH_IP + _tcp_header(self.region)
        except BaseException:
            self.close()
            raise
        return self

    def _tc(self, *args: str) -> str:
        return ip("tc", "-n", self.up.name, *args)

    def _add_class(self, classid: str) -> None:
        self._tc("class", "add", "dev", self.up_dev, "parent", "10:", "classid", classid,
                 "htb", "rate", "10gbit", "quantum", "65536")  # fmt: skip
        self._tc("qdisc", "add", "dev", self.up_dev, "parent", classid, "bfifo",
                 "limit", str(self.queue_bytes))  # fmt: skip

    def track(self, name: str, port: int) -> None:
        """Count what the upstream side sends from TCP source ``port`` (a relay's listening
        port) under ``name``: its own htb class, read by ``counters(name)``."""
        classid = f"10:{0x100 + len(self._classes):x}"
        self._add_class(classid)
        self._tc("filter", "add", "dev", self.up_dev, "parent", "10:", "protocol", "ip",
                 "prio", "1", "u32", "match", "ip", "sport", str(port), "0xffff",
                 "flowid", classid)  # fmt: skip
        self._classes[name] = classid

    def _class_sent(self, classid: str) -> tuple[int, int]:
        text = self._tc("-s", "class", "show", "dev", self.up_dev, "classid", classid)
        m = re.search(r"Sent (\d+) bytes (\d+) pkt", text)
        return (int(m[1]), int(m[2])) if m else (0, 0)

    def counters(self, name: str | None = None) -> LinkCounters:
        """The link's counters now: all traffic (region veth + upstream tbf), or with
        ``name`` what went downstream from the port tracked under that name (as rx).

        Raises:
            harness.netns.NetnsError: reading failed.
            KeyError: ``name`` is not tracked.
        """
        if name is not None:
            sent, packets = self._class_sent(self._classes[name])
            return LinkCounters(rx_bytes=sent, rx_packets=packets, header_bytes=self.header_bytes)
        dev = json.loads(ip("-n", self.region.name, "-s", "-j", "link", "show", "dev",
                            self.region_dev))[0]["stats64"]  # fmt: skip
        tbf: dict[str, Any] = {}
        for q in json.loads(ip("tc", "-n", self.up.name, "-s", "-j", "qdisc", "show", "dev",
                               self.up_dev)):  # fmt: skip
            if q.get("kind") == "tbf":
                tbf = q
        return LinkCounters(
            rx_bytes=int(dev["rx"]["bytes"]),
            rx_packets=int(dev["rx"]["packets"]),
            tx_bytes=int(dev["tx"]["bytes"]),
            tx_packets=int(dev["tx"]["packets"]),
            tbf_sent_bytes=int(tbf.get("bytes", 0)),
            tbf_dropped=int(tbf.get("drops", 0)),
            tbf_overlimits=int(tbf.get("overlimits", 0)),
            header_bytes=self.header_bytes,
        )

    def describe(self) -> dict[str, object]:
        return {
            "rate_mbit": self.rate_mbit,
            "tbf_burst_bytes": self.burst_bytes,
            "tbf_limit_bytes": self.queue_bytes,
            "tracked_ports": dict(self._classes),
            "namespaces": [self.region.name, self.up.name],
            "addresses": {"region": self.region_addr, "upstream": self.up_addr},
            "header_bytes_per_packet": self.header_bytes,
        }

    def close(self) -> None:
        """Delete both namespaces (and so the veth pair). Never raises; idempotent."""
        self.region.delete()
        self.up.delete()

    def __enter__(self) -> WanLink:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _tcp_header(ns: Netns) -> int:
    """TCP header bytes per segment in ``ns``: 20, plus 12 when timestamps are on."""
    with ns.entered():
        try:
            on = Path("/proc/sys/net/ipv4/tcp_timestamps").read_text().strip() != "0"
        except OSError:
            on = True
    return 32 if on else 20


class WanRelay(ListeningLineService):
    """Launcher: the relay process, inside ``netns`` when given (a :class:`harness.netns.Netns`)."""

    log_name = "wanrelay.log"

    def __init__(
        self,
        listen: str,
        target: str,
        *,
        delay_ms: float = 25.0,
        slow_start: bool = True,
        netns: Any = None,
        workdir: str | Path | None = None,
        name: str = "wanrelay",
        start_timeout: float = 15.0,
    ) -> None:
        super().__init__(
            name=name, workdir=workdir, temp_prefix="qs-wanrelay-", start_timeout=start_timeout
        )
        self.listen = listen
        self.target = target
        self.delay_ms = delay_ms
        self.slow_start = slow_start
        self.netns = netns
        self.control_path = self.workdir / f"{name}-control.json"

    def argv(self) -> list[str]:
        cmd = [sys.executable, "-m", "harness.wanrelay", "--listen", self.listen,
               "--target", self.target, "--delay-ms", f"{self.delay_ms:g}",
               "--control", str(self.control_path)]  # fmt: skip
        if not self.slow_start:
            cmd.append("--no-slow-start")
        return self.netns.argv(cmd) if self.netns is not None else cmd

    def process_env(self) -> dict[str, str]:
        return {"PYTHONUNBUFFERED": "1"}

    def events(self, kind: str) -> list[dict[str, Any]]:
        """The relay's ``{"event": kind}`` lines so far."""
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{") and f'"{kind}"' in line:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == kind:
                    out.append(event)
        return out

    def arm_cut(self, after: int, *, mode: str = "reset", timeout: float = 5.0) -> None:
        """Arm one cut after ``after`` more bytes towards a client (``after < 0``: disarm);
        returns once the relay confirmed. Raises TimeoutError when it did not in ``timeout`` s."""
        assert self.process is not None
        before = len(self.events("armed"))
        self.control_path.write_text(json.dumps({"after": after, "mode": mode}))
        os.kill(self.process.pid, signal.SIGUSR1)
        if not wait_until(lambda: len(self.events("armed")) > before, timeout):
            raise TimeoutError("the relay did not confirm the armed cut")
