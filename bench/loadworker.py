"""The worker side of :mod:`bench.loadgen`: a process that runs :class:`FetchJob` s it receives.

:func:`worker_main` is a ``spawn`` process's target. It reports ``"ready"`` once its imports
are done, then serves jobs from its pipe until the pipe closes or ``None`` arrives: each job's
clients run concurrently in one asyncio loop (uvloop when available), each GETs its URL once on
its own connection with a minimal HTTP/1.1 client (:class:`_Fetch`), counts the bytes (hashing
them only when the job asks for a digest) and records its time to first byte, total time and
longest pause between body reads. A job with ``start_at`` waits for that ``CLOCK_MONOTONIC``
instant, so the workers of one job start together.

Guarantees: every request is bounded by ``FetchJob.timeout``; a body shorter than announced,
a bad chunk or a timeout is an error in that client's result, never a success; a job that
raises still sends a :class:`JobResult` (one client naming the error) instead of the worker
dying silently. Ctrl-C is left to the driver, which stops the worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from bench.loadjob import ClientResult, FetchJob, JobResult

_READ_CHUNK = 1 << 20  # bytes asked of the socket buffer per read


class _Fetch(asyncio.BufferedProtocol):
    """One HTTP/1.1 GET on its own connection; body bytes land in a reused buffer and are
    counted (and hashed when asked), never copied. Handles Content-Length, chunked and
    read-until-close bodies; a body shorter than announced is an error, not a success."""

    def __init__(self, request: bytes, res: ClientResult, start: float, hasher: Any) -> None:
        self._request = request
        self._res = res
        self._start = start
        self._hasher = hasher
        self._buf = bytearray(_READ_CHUNK)
        self._view = memoryview(self._buf)
        self._head = bytearray()
        self._state = "head"  # head | body | eof-body | size | data | crlf | done
        self._left = 0  # bytes left in the fixed-length body, chunk data or chunk CRLF
        self._line = bytearray()
        self._transport: Any = None
        self._last = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # uvloop transports do not subclass asyncio.Transport
        self._transport.write(self._request)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        data = self._view[:nbytes]
        if self._state == "head":
            if not self._res.t_headers:
                self._res.t_headers = time.monotonic() - self._start
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > 65536:
                    self._finish("response headers too long")
                return
            rest = bytes(self._head[end + 4 :])
            self._parse_head(bytes(self._head[:end]))
            if rest and self._state != "done":
                self._body(memoryview(rest))
            return
        self._body(data)

    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        try:
            self._res.status = int(parts[1])
        except (IndexError, ValueError):
            self._finish(f"bad status line {lines[0]!r}")
            return
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = "size"
        elif "content-length" in headers:
            self._left = int(headers["content-length"])
            self._state = "body"
            if self._left == 0:
                self._finish("")
        else:
            self._state = "eof-body"

    def _count(self, data: memoryview) -> None:
        if not data:
            return
        now = time.monotonic()
        if not self._res.ttfb:
            self._res.ttfb = now - self._start
        elif now - self._last > self._res.max_gap:
            self._res.max_gap = now - self._last
        self._last = now
        self._res.bytes += len(data)
        if self._hasher is not None:
            self._hasher.update(data)

    def _body(self, data: memoryview) -> None:
        while data and self._state != "done":
            if self._state == "eof-body":
                self._count(data)
                return
            if self._state in ("body", "data"):
                n = min(self._left, len(data))
                self._count(data[:n])
                self._left -= n
                data = data[n:]
                if self._left == 0:
                    if self._state == "body":
                        self._finish("")
                    else:
                        self._state, self._left = "crlf", 2
            elif self._state == "crlf":
                n = min(self._left, len(data))
                self._left -= n
                data = data[n:]
                if self._left == 0:
                    self._state = "size"
            elif self._state == "size":
                nl = bytes(data[:64]).find(b"\n")
                if nl < 0:
                    self._line += data
                    data = data[len(data) :]
                    continue
                self._line += data[: nl + 1]
                data = data[nl + 1 :]
                size_text = self._line.split(b";", 1)[0].strip()
                self._line.clear()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    self._finish(f"bad chunk size {size_text!r}")
                    return
                if size == 0:
                    self._finish("")
                else:
                    self._state, self._left = "data", size

    def _finish(self, error: str) -> None:
        if self._state == "done":
            return
        self._state = "done"
        self._res.error = self._res.error or error
        if not self.done.done():
            self.done.set_result(None)
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state == "eof-body":
            self._finish("")
        elif self._state != "done":
            self._finish(f"connection closed in state {self._state}" + (f": {exc}" if exc else ""))


async def _fetch_one(url: str, job: FetchJob, start: float, digest: str | None) -> ClientResult:
    res = ClientResult(url=url)
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    extra = "".join(f"{k}: {v}\r\n" for k, v in job.headers)
    if not any(k.lower() == "accept" for k, _ in job.headers):
        extra = "Accept: */*\r\n" + extra
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: quayside-bench\r\n"
        f"{extra}Connection: close\r\n\r\n"
    ).encode("latin-1")
    hasher = hashlib.sha256() if digest else None
    loop = asyncio.get_running_loop()
    proto = _Fetch(request, res, start, hasher)
    try:
        async with asyncio.timeout(job.timeout):
            await loop.create_connection(lambda: proto, parts.hostname, parts.port or 80)
            await proto.done
    except (TimeoutError, OSError) as exc:
        res.error = res.error or f"{type(exc).__name__}: {exc}"
        proto._finish(res.error)
    res.total = time.monotonic() - start
    if hasher is not None:
        res.digest_ok = "sha256:" + hasher.hexdigest() == digest
    return res


async def _run_job(job: FetchJob) -> JobResult:
    delay = job.start_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    start = job.start_at if job.start_at > 0 else time.monotonic()
    clients = await asyncio.gather(
        *(_fetch_one(u, job, start, job.digest_for(i)) for i, u in enumerate(job.urls))
    )
    return JobResult(clients=list(clients), wall=max((c.total for c in clients), default=0.0))


def worker_main(conn: Connection) -> None:
    """Serve jobs from ``conn`` until it closes: receive a FetchJob, send a JobResult."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's; it stops us
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    try:
        conn.send("ready")  # imports done: a job's synchronized start no longer waits on them
    except OSError:  # the driver is gone already (stopped while we started): so are we
        return
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            result = runner(_run_job(job))
        except Exception as exc:  # report, never die silently
            result = JobResult(clients=[ClientResult(url="*", error=repr(exc))])
        try:
            conn.send(result)
        except OSError:  # the driver stopped waiting (Ctrl-C, SIGTERM, a timeout)
            return
