"""The WAN's delay: a TCP relay that holds every byte for a one-way delay, in both directions.

Run it in the upstream namespace of a :class:`harness.wanlink.WanLink` (the kernels here have
no ``netem``)::

    python -m harness.wanrelay --listen 169.254.77.1:0 --target 127.0.0.1:5000 --delay-ms 25

Every accepted connection gets its own connection to ``--target``; what one side sends reaches
the other ``--delay-ms`` later, in order, EOF and close included. What real TCP over a long
path adds beyond the delay is emulated too, so a client pays what it would pay on a WAN:

- connection set-up: a client's first bytes on a new connection are released no earlier than
  one round trip + one way after the accept (the SYN/SYN-ACK round trip the veth hop skipped);
- slow start (``--no-slow-start`` turns it off): per direction, round ``k`` after the first
  byte may carry ``IW * 2**k`` bytes (IW = 10 segments of 1448 B), one round per RTT; after an
  idle gap longer than the RTO (200 ms + RTT) it starts over, as Linux does by default.

Flow control is bounded: a direction stops reading its source while ``--queue`` bytes wait
(default 2 MiB, more than rate x delay at 200 Mbit/s), and never writes into a destination
whose transport asked to pause, so memory stays bounded per connection.

Faults: ``SIGUSR1`` reads ``<control file>`` (JSON ``{"after": BYTES, "mode": "reset"|"stall"}``)
and arms one cut (a negative ``after`` disarms): the first connection that relays ``after`` more bytes towards the client is
reset on both sides (``reset``) or silently stops forwarding in both directions (``stall``).
The relay runs at ``--nice`` -10 when allowed, so a busy machine adds less to the delay.
The relay prints ``{"event": "armed"}`` and ``{"event": "cut", ...}`` lines on stdout, and
``{"event": "listening", "url": ...}`` once bound.

:class:`harness.wanlink.WanRelay` launches it inside a namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
from collections import deque
from pathlib import Path
from typing import Any

IW = 10 * 1448
_EOF = b""
_MAX_ROUND = 24


def _round_of(offset: int) -> int:
    """The slow-start round that carries byte ``offset`` (round k holds ``IW * 2**k``)."""
    k = 0
    while k < _MAX_ROUND and IW * ((2 << k) - 1) <= offset:
        k += 1
    return k


class _Pipe:
    """One direction of one connection: delayed, ordered, bounded (see the module doc)."""

    def __init__(self, conn: _Conn, towards_client: bool, not_before: float) -> None:
        self.conn = conn
        self.towards_client = towards_client
        self.loop = conn.relay.loop
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.src: Any = None
        self.dst: Any = None
        self.dst_paused = True  # until the destination is connected
        self.src_paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.not_before = not_before
        self.epoch_start = -1.0
        self.epoch_sent = 0
        self.last_at = -1e9
        self.released = 0
        self.done = False

    def feed(self, data: bytes) -> None:
        relay = self.conn.relay
        base = max(self.loop.time() + relay.delay, self.not_before, self.last_at)
        if relay.slow_start and data:
            if self.epoch_start < 0 or (not self.queue and base - self.last_at > relay.rto):
                self.epoch_start, self.epoch_sent = base, 0
            off, end = self.epoch_sent, self.epoch_sent + len(data)
            view = memoryview(data)
            while off < end:
                k = _round_of(off)
                limit = end if k >= _MAX_ROUND else min(end, IW * ((2 << k) - 1))
                at = max(base, self.epoch_start + k * relay.rtt)
                piece = bytes(view[off - self.epoch_sent : limit - self.epoch_sent])
                self.queue.append((at, piece))
                self.last_at = at
                off = limit
            self.epoch_sent = end
        else:
            self.queue.append((base, data))
            self.last_at = base
        self.queued += len(data)
        if self.queued > relay.queue_cap and not self.src_paused and self.src is not None:
            self.src_paused = True
            self.src.pause_reading()
        self.schedule()

    def schedule(self) -> None:
        if self.timer is None and self.queue and not self.dst_paused and not self.done:
            self.timer = self.loop.call_at(self.queue[0][0], self.release)

    def release(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.queue and not self.dst_paused and not self.done:
            at, data = self.queue[0]
            if at > now + 0.001:  # the loop's clock ticks in ms: as often early as late
                break
            self.queue.popleft()
            if self.dst.is_closing():  # the far side is gone: nothing more to deliver
                self.stop()
                return
            if not data:  # _EOF
                if self.dst.can_write_eof():
                    self.dst.write_eof()
                self.conn.eof_passed()
                continue
            self.queued -= len(data)
            if self.towards_client:
                data = self.conn.relay.before_client_write(self.conn, data)
                if self.done:
                    return
            self.dst.write(data)
            self.released += len(data)
        if self.src_paused and self.queued <= self.conn.relay.queue_cap // 2 and not self.done:
            self.src_paused = False
            if self.src is not None:
                self.src.resume_reading()
        self.schedule()

    def stop(self) -> None:
        self.done = True
        self.queue.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Side(asyncio.Protocol):
    """One socket of a relayed connection: reads into ``out``, is the destination of ``inn``."""

    def __init__(self, conn: _Conn, client: bool) -> None:
        self.conn = conn
        self.client = client
        self.transport: Any = None

    @property
    def out(self) -> _Pipe:
        return self.conn.up if self.client else self.conn.down

    @property
    def inn(self) -> _Pipe:
        return self.conn.down if self.client else self.conn.up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.transport.set_write_buffer_limits(high=512 * 1024)
        self.out.src = transport
        self.inn.dst = transport
        self.inn.dst_paused = False
        if self.client:
            self.conn.open_upstream()
        self.inn.schedule()

    def data_received(self, data: bytes) -> None:
        if not self.conn.stalled:
            self.out.feed(data)

    def eof_received(self) -> bool:
        if not self.conn.stalled:
            self.out.feed(_EOF)
        return True

    def pause_writing(self) -> None:
        self.inn.dst_paused = True

    def resume_writing(self) -> None:
        self.inn.dst_paused = False
        self.inn.schedule()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.side_lost(self)


class _Conn:
    """A client connection and its upstream connection."""

    def __init__(self, relay: Relay, ident: int) -> None:
        self.relay = relay
        self.ident = ident
        accepted = relay.loop.time()
        self.up = _Pipe(self, False, accepted + relay.rtt + relay.delay)
        self.down = _Pipe(self, True, accepted)
        self.client = _Side(self, True)
        self.upstream = _Side(self, False)
        self.cut_budget: int | None = relay.cut_after if relay.armed else None
        self.stalled = False
        self.closed = False
        self.eofs = 0

    def open_upstream(self) -> None:
        self.relay.conns[self.ident] = self
        self.relay.loop.create_task(self._connect())

    async def _connect(self) -> None:
        host, port = self.relay.target
        try:
            await self.relay.loop.create_connection(lambda: self.upstream, host, port)
        except OSError:
            self.close(abort=True)

    def eof_passed(self) -> None:
        self.eofs += 1
        if self.eofs >= 2:
            self.close(abort=False)

    def side_lost(self, side: _Side) -> None:
        if self.closed:
            return
        other = self.upstream if side is self.client else self.client
        pipe = side.out  # what this side had sent still reaches the other side, then close
        pipe.src = None
        if other.transport is None or pipe.done:
            self.close(abort=True)
            return
        pipe.feed(_EOF)
        side.inn.stop()
        self.eofs = max(self.eofs, 1)

    def close(self, *, abort: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.up.stop()
        self.down.stop()
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.transport.is_closing():
                side.transport.abort() if abort else side.transport.close()
        self.relay.conns.pop(self.ident, None)


class Relay:
    """Accepts on ``listen`` and relays to ``target`` with the delays described above."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        target: tuple[str, int],
        delay: float,
        *,
        slow_start: bool = True,
        queue_cap: int = 2 * 1024 * 1024,
        control: Path | None = None,
    ) -> None:
        self.loop = loop
        self.target = target
        self.delay = delay
        self.rtt = 2 * delay
        self.rto = 0.2 + self.rtt
        self.slow_start = slow_start
        self.queue_cap = queue_cap
        self.control = control
        self.conns: dict[int, _Conn] = {}
        self.ids = itertools.count(1)
        self.armed = False
        self.cut_after = 0
        self.cut_mode = "reset"

    def accept(self) -> _Side:
        return _Conn(self, next(self.ids)).client

    def arm(self) -> None:
        """SIGUSR1: read the control file and arm one cut."""
        try:
            spec = json.loads(self.control.read_text()) if self.control else {}
        except (OSError, ValueError) as exc:
            _emit({"event": "arm-failed", "error": str(exc)})
            return
        self.cut_after = int(spec.get("after", 0))
        self.cut_mode = "stall" if spec.get("mode") == "stall" else "reset"
        self.armed = self.cut_after >= 0  # a negative "after" disarms
        for conn in self.conns.values():
            conn.cut_budget = self.cut_after if self.armed else None
        _emit({"event": "armed", "after": self.cut_after, "mode": self.cut_mode})

    def before_client_write(self, conn: _Conn, data: bytes) -> bytes:
        """Count bytes towards an armed cut; cut (and return what still passes) at the mark."""
        if conn.cut_budget is None:
            return data
        if len(data) < conn.cut_budget:
            conn.cut_budget -= len(data)
            return data
        head = data[: conn.cut_budget]
        if head:
            conn.client.transport.write(head)
        self.armed = False
        for other in self.conns.values():
            other.cut_budget = None
        _emit({"event": "cut", "conn": conn.ident, "mode": self.cut_mode,
               "down_bytes": conn.down.released + len(head)})  # fmt: skip
        if self.cut_mode == "stall":
            conn.stalled = True
            conn.up.stop()
            conn.down.stop()
            for side in (conn.client, conn.upstream):
                if side.transport is not None:
                    side.transport.pause_reading()
        else:
            conn.close(abort=True)
        return b""


def _emit(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    host, _, port = args.listen.rpartition(":")
    thost, _, tport = args.target.rpartition(":")
    relay = Relay(
        loop,
        (thost, int(tport)),
        args.delay_ms / 1000.0,
        slow_start=not args.no_slow_start,
        queue_cap=args.queue,
        control=Path(args.control) if args.control else None,
    )
    loop.add_signal_handler(signal.SIGUSR1, relay.arm)
    server = await loop.create_server(relay.accept, host, int(port), backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    _emit({"event": "listening", "url": f"http://{host}:{bound}", "pid": os.getpid()})
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.wanrelay")
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept on (port 0: any)")
    parser.add_argument("--target", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay")
    parser.add_argument("--no-slow-start", action="store_true")
    parser.add_argument("--queue", type=int, default=2 * 1024 * 1024, help="bytes per direction")
    parser.add_argument("--control", help="JSON file read on SIGUSR1 (arms one cut)")
    parser.add_argument("--nice", type=int, default=-10, help="scheduling priority (root)")
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):  # a link's delay must not grow with the machine's load
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    try:
        import uvloop

        uvloop.run(_serve(args))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
