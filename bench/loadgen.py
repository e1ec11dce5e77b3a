"""Streaming blob clients in separate worker processes, so they never share a GIL with a server.

A :class:`FetchJob` is a list of URLs, one per client; every client GETs its URL once, counts
the bytes (and discards them, or hashes them when ``verify_digest`` or ``digests`` ask) and
records its time to first byte, total time and longest pause between body reads. The clients
of a job run concurrently in one asyncio loop (uvloop when available) per worker process; a job
can be split over several workers that all start at the same ``CLOCK_MONOTONIC`` instant
(system-wide on Linux, so comparable across processes); results come back in URL order.

Guarantees:
- every request is bounded by ``FetchJob.timeout``; :meth:`LoadGenerator.run` by that plus a
  grace period, after which the workers are replaced and :class:`LoadTimeout` is raised;
- workers are daemon processes started with ``spawn`` (no inherited loops or sockets),
  terminated by :meth:`LoadGenerator.close` (also on ``with`` exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing as mp
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

_READ_CHUNK = 1 << 20  # bytes asked of the socket buffer per read
_START_SLACK = 0.15  # seconds between dispatch and the synchronized start
_READY_TIMEOUT = 60.0  # seconds a new worker may take to import and report ready


class LoadTimeout(TimeoutError):
    """A job did not finish within its timeout; its workers were killed and replaced."""


@dataclass(frozen=True)
class FetchJob:
    """One round of concurrent GETs: ``urls[i]`` is client ``i``'s request."""

    urls: tuple[str, ...]
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 60.0
    verify_digest: str | None = None
    start_at: float = 0.0  # time.monotonic() instant; 0 means "as soon as received"
    digests: tuple[str, ...] = ()  # per URL: the body's expected digest ("" = no check)

    def digest_for(self, i: int) -> str | None:
        """The digest client ``i``'s body is checked against (``None``: not checked)."""
        if self.digests:
            return self.digests[i] or None
        return self.verify_digest


@dataclass
class ClientResult:
    """What one client saw. Times are seconds since the job's common start instant."""

    url: str
    status: int = 0
    bytes: int = 0
    t_headers: float = 0.0  # first response byte
    ttfb: float = 0.0  # first body byte
    total: float = 0.0
    error: str = ""
    digest_ok: bool | None = None
    max_gap: float = 0.0  # longest pause between two body reads (a stalled stream shows here)

    @property
    def ok(self) -> bool:
        return not self.error and 200 <= self.status < 300


@dataclass
class JobResult:
    """All clients of a job; ``wall`` is from the common start to the last client's end."""

    clients: list[ClientResult] = field(default_factory=list)
    wall: float = 0.0

    @property
    def total_bytes(self) -> int:
        return sum(c.bytes for c in self.clients)

    @property
    def errors(self) -> list[str]:
        return [f"{c.url}: {c.error or c.status}" for c in self.clients if not c.ok]


# -- worker side ------------------------------------------------------------------------------


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


def _worker_main(conn: Connection) -> None:
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


# -- driver side ------------------------------------------------------------------------------


class LoadGenerator:
    """A pool of ``processes`` persistent worker processes running :class:`FetchJob` s."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = max(1, processes)
        self._ctx = mp.get_context("spawn")
        self._workers: list[tuple[Any, Connection]] = []

    def start(self) -> LoadGenerator:
        """Start the missing workers and wait until each is ready (at most 60 s).

        Raises:
            LoadTimeout: a worker did not report ready in time (it is stopped).
        """
        new = []
        while len(self._workers) < self.processes:
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(target=_worker_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self._workers.append((proc, parent))
            new.append(parent)
        for conn in new:
            try:
                ready = conn.poll(_READY_TIMEOUT) and conn.recv() == "ready"
            except (EOFError, OSError):
                ready = False
            if not ready:
                self.close()
                raise LoadTimeout("a load-generator worker did not start")
        return self

    def run(self, job: FetchJob, *, processes: int | None = None) -> JobResult:
        """Run ``job`` split over up to ``processes`` workers (default: all); merge the results.

        Raises:
            LoadTimeout: not finished within ``job.timeout`` + 10 s (workers are replaced).
        """
        self.start()
        n = max(1, min(processes or self.processes, self.processes, len(job.urls)))
        # one worker starts on receipt; several start together a moment after dispatch
        start_at = time.monotonic() + _START_SLACK if n > 1 else 0.0
        parts = [job.urls[i::n] for i in range(n)]
        used = self._workers[:n]
        for i, ((_, conn), urls) in enumerate(zip(used, parts, strict=True)):
            conn.send(
                FetchJob(
                    urls=urls,
                    headers=job.headers,
                    timeout=job.timeout,
                    verify_digest=job.verify_digest,
                    start_at=start_at,
                    digests=job.digests[i::n] if job.digests else (),
                )
            )
        deadline = max(start_at, time.monotonic()) + job.timeout + 10.0
        merged = JobResult()
        slots: list[ClientResult | None] = [None] * len(job.urls)
        try:
            for i, (_, conn) in enumerate(used):
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    raise LoadTimeout(f"load job with {len(job.urls)} clients timed out")
                part: JobResult = conn.recv()
                for j, client in enumerate(part.clients[: len(parts[i])]):
                    slots[i + j * n] = client  # back in the order of job.urls
                for j in range(len(part.clients), len(parts[i])):
                    why = part.clients[0].error if part.clients else "no result"
                    slots[i + j * n] = ClientResult(url=parts[i][j], error=why)
        except (LoadTimeout, EOFError, OSError):
            self._restart()
            raise
        merged.clients = [c for c in slots if c is not None]
        merged.wall = max((c.total for c in merged.clients), default=0.0)
        return merged

    def _restart(self) -> None:
        self.close()
        self.start()

    def close(self) -> None:
        """Stop every worker (politely, then by force). Idempotent."""
        for _proc, conn in self._workers:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
            conn.close()
        for proc, _ in self._workers:
            proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2.0)
        self._workers.clear()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
