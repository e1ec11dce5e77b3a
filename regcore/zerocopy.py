"""Zero-copy file bodies on any event loop, uvloop included.

aiohttp's ``FileResponse`` relies on ``loop.sendfile``, which uvloop does not implement: under
uvloop it silently falls back to reading chunks in a thread and copying them through Python.
:func:`send_file_body` calls ``os.sendfile`` on the connection's socket itself:

- the socket's fd is ``dup()``-ed, so readiness can be awaited with ``loop.add_writer`` on the
  duplicate (uvloop refuses ``add_writer`` on a fd its transport owns); the duplicate shares the
  open file description (and its O_NONBLOCK), and its poll registration is removed before it is
  closed, so nothing stale stays in the loop's epoll set;
- it only writes when the transport's own buffer is empty (headers went out first), and the
  transport is not used for writing until it returns, so bytes never interleave;
- TLS connections (bytes must go through the SSL object) and transports without a socket fall
  back to reading in a thread and ``StreamResponse.write``;
- the event loop never waits for the disk: each ``os.sendfile`` call covers at most
  :data:`SENDFILE_STEP` bytes, and before it the first and last byte of that range are probed
  with ``preadv(RWF_NOWAIT)`` (a read that fails rather than wait for I/O). When either is not
  in the page cache (a blob written with O_DIRECT by a fill, evicted, or never read), that call
  and every later one of the same body run in a worker thread instead, as nginx's ``aio
  threads`` does for sendfile: the socket is non-blocking, so the thread returns as soon as the
  socket buffer is full, and the disk read stalls only this response, not every connection on
  the loop. (Sticky, because the probes see two pages: the kernel's readahead, which the
  probes themselves start, leaves cached islands in a cold file, and a range whose two ends
  are cached may still wait for the disk in between.) :data:`OFFLOADED` counts these
  calls and their bytes (process-wide; exported as ``quayside_sendfile_offloaded_*_total`` by
  :func:`regcore.metrics.process_metrics`).

:func:`send_span` serves a span of a file that is still being filled: the bytes its
``locate`` callback says are still only in memory (the fill's newest pieces) are written from
there with non-blocking ``write`` calls on the same duplicate (no view is kept across an
``await``: each time the socket is writable again, ``locate`` is asked anew), the rest with
``os.sendfile`` from the file.

Raises ``ConnectionResetError`` when the client goes away; the caller lets it propagate (aiohttp
closes the connection). A file shorter than promised raises ``EOFError`` (the response is then
cut short, never completed cleanly).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from regcore.http import etag_matches, parse_range

CHUNK = 1 << 20  # fallback read size
SENDFILE_STEP = 8 << 20  # at most this per os.sendfile call; its two ends are probed first
# sendfile errnos that mean the peer is gone (raised as ConnectionResetError: one info line)
_CLIENT_GONE = frozenset(
    {errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNABORTED, errno.ETIMEDOUT}
)


class Offloaded:
    """``os.sendfile`` calls run in a worker thread because their file range was not in the
    page cache, and the bytes they sent (process-wide counters)."""

    def __init__(self) -> None:
        self.calls = 0
        self.bytes = 0


OFFLOADED = Offloaded()
_PROBE = bytearray(1)
DISK_THREADS = 8  # sendfile calls waiting for the disk at once, process-wide (nginx: 32)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _disk_pool() -> ThreadPoolExecutor:
    """The threads that run sendfile calls needing the disk: their own pool, so a slow disk
    never queues the default executor's short jobs (password checks, manifest reads)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=DISK_THREADS, thread_name_prefix="sendfile")
        return _pool


def in_page_cache(fd: int, offset: int, count: int) -> bool:
    """Whether the first and the last byte of ``offset..offset+count-1`` of ``fd`` can be read
    without waiting for the disk (``preadv`` with ``RWF_NOWAIT``). True where the kernel or the
    filesystem cannot tell (EOPNOTSUPP, EINVAL): the old behaviour, sendfile on the loop."""
    try:
        os.preadv(fd, (_PROBE,), offset, os.RWF_NOWAIT)
        if count > 1:
            os.preadv(fd, (_PROBE,), offset + count - 1, os.RWF_NOWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def zero_copy_fd(request: web.Request) -> int | None:
    """The socket fd zero-copy can use for ``request``, or None (TLS, no socket)."""
    transport = request.transport
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        return sock.fileno()
    except (OSError, ValueError):
        return None


async def send_file_body(
    request: web.Request, response: web.StreamResponse, fd: int, offset: int, count: int
) -> None:
    """Write ``count`` bytes of open file ``fd`` from ``offset`` as the (prepared) body."""
    sock_fd = zero_copy_fd(request)
    if sock_fd is None or os.environ.get("AIOHTTP_NOSENDFILE"):
        await _copy(response, fd, offset, count)
        return
    transport = request.transport
    assert transport is not None
    loop = asyncio.get_running_loop()
    dup = os.dup(sock_fd)
    try:
        while transport.get_write_buffer_size():  # headers still queued: let them go first
            await _writable(loop, dup)
            await asyncio.sleep(0)
        with _corked(request):
            await _sendfile_loop(loop, transport, dup, fd, offset, count)
    finally:
        os.close(dup)


async def _sendfile_loop(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.BaseTransport,
    dup: int,
    fd: int,
    offset: int,
    count: int,
) -> None:
    sent_since_yield = 0
    from_disk = False  # once a range had to come from the disk, the rest goes the same way
    while count > 0:
        if transport.is_closing():
            raise ConnectionResetError("client closed the connection")
        step = min(count, SENDFILE_STEP)
        try:
            if not from_disk and in_page_cache(fd, offset, step):
                n = os.sendfile(dup, fd, offset, step)
            else:
                from_disk = True
                n = await _sendfile_in_thread(loop, dup, fd, offset, step)
        except BlockingIOError:
            await _writable(loop, dup)
            continue
        except OSError as exc:
            if exc.errno in _CLIENT_GONE:  # reset, closed, timed out: not our bug
                raise ConnectionResetError(str(exc)) from exc
            raise
        if n == 0:
            raise EOFError(f"file ended {count} bytes short")
        offset += n
        count -= n
        sent_since_yield += n
        if sent_since_yield >= 8 * CHUNK:  # fairness: let other connections run
            sent_since_yield = 0
            await asyncio.sleep(0)


async def _sendfile_in_thread(
    loop: asyncio.AbstractEventLoop, dup: int, fd: int, offset: int, count: int
) -> int:
    """``os.sendfile`` in the disk pool (the range must come from the disk). The
    descriptors stay open until the thread is done with them: a cancelled caller waits for it
    (not long: the socket is non-blocking and the read at most :data:`SENDFILE_STEP`)."""
    fut = loop.run_in_executor(_disk_pool(), os.sendfile, dup, fd, offset, count)
    try:
        n = await asyncio.shield(fut)
    except asyncio.CancelledError:
        while not fut.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait((fut,))
        with contextlib.suppress(BaseException):  # retrieved: no "never retrieved" warning
            fut.result()
        raise
    OFFLOADED.calls += 1
    OFFLOADED.bytes += n
    return n


Locate = Callable[[int, int], tuple[memoryview | None, int]]


async def send_span(
    request: web.Request,
    response: web.StreamResponse,
    fd: int,
    offset: int,
    count: int,
    locate: Locate,
) -> None:
    """Write ``count`` bytes from ``offset`` as the (prepared) body: from memory where
    ``locate(pos, stop)`` returns a view (valid until the next ``await``), else from open
    file ``fd`` up to the offset it returns."""
    stop = offset + count
    while offset < stop:
        view, file_stop = locate(offset, stop)
        if view is None:
            await send_file_body(request, response, fd, offset, file_stop - offset)
            offset = file_stop
        else:
            del view  # asked for again where it is sent: it may be gone after an await
            offset = await _send_live(request, response, locate, offset, stop)


async def _send_live(
    request: web.Request, response: web.StreamResponse, locate: Locate, offset: int, stop: int
) -> int:
    """Send live bytes from ``offset`` while ``locate`` has them; returns the new offset."""
    sock_fd = zero_copy_fd(request)
    if sock_fd is None or os.environ.get("AIOHTTP_NOSENDFILE"):
        view, _ = locate(offset, stop)
        if view is None:
            return offset
        data = bytes(view)  # a copy, taken before the write awaits
        del view
        await response.write(data)
        return offset + len(data)
    transport = request.transport
    assert transport is not None
    loop = asyncio.get_running_loop()
    dup = os.dup(sock_fd)
    try:
        while transport.get_write_buffer_size():  # headers still queued: let them go first
            await _writable(loop, dup)
            await asyncio.sleep(0)
        with _corked(request):
            return await _write_live(loop, transport, dup, locate, offset, stop)
    finally:
        os.close(dup)


async def _write_live(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.BaseTransport,
    dup: int,
    locate: Locate,
    offset: int,
    stop: int,
) -> int:
    sent_since_yield = 0
    while offset < stop:
        if transport.is_closing():
            raise ConnectionResetError("client closed the connection")
        view, _ = locate(offset, stop)
        if view is None:
            break
        try:
            n = os.write(dup, view)
        except BlockingIOError:
            n = -1
        except OSError as exc:
            if exc.errno in _CLIENT_GONE:
                raise ConnectionResetError(str(exc)) from exc
            raise
        finally:
            del view
        if n < 0:
            await _writable(loop, dup)
            continue
        offset += n
        sent_since_yield += n
        if sent_since_yield >= 8 * CHUNK:  # fairness: let other connections run
            sent_since_yield = 0
            await asyncio.sleep(0)
    return offset


async def prepare_unbuffered(request: web.Request, response: web.StreamResponse) -> None:
    """``response.prepare`` and make sure the headers left aiohttp's writer (not buffered
    until the first ``write``): a body sent past the writer must come after them."""
    writer = await response.prepare(request)
    send_headers = getattr(writer, "send_headers", None)
    if send_headers is not None:
        send_headers()


@contextlib.contextmanager
def _corked(request: web.Request) -> Iterator[None]:
    """``TCP_CORK`` on the connection while a burst of body bytes goes out past the
    transport, cleared after it (which pushes the last partial segment at once).

    What nginx's ``tcp_nopush`` does for sendfile: corked, the kernel sends only full
    segments; uncorked, a socket with ``TCP_NODELAY`` (aiohttp sets it) pushes a segment for
    every piece sendfile or a write hands over, and one client's warm throughput over loopback
    was ~30% lower (2.5 vs 3.2 GB/s on 200 MiB here). Nothing waits corked: every burst ends
    (or fails) by leaving this block, and a wait for the client (EAGAIN) only happens while
    the socket buffer is full.
    """
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    cork = getattr(socket, "TCP_CORK", None)  # Linux
    corked = False
    if sock is not None and cork is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, cork, 1)
            corked = True
    try:
        yield
    finally:
        if corked:
            with contextlib.suppress(OSError):  # the client may be gone
                sock.setsockopt(socket.IPPROTO_TCP, cork, 0)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    fut = loop.create_future()
    loop.add_writer(fd, _set_done, fut)
    try:
        await fut
    finally:
        loop.remove_writer(fd)


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _copy(response: web.StreamResponse, fd: int, offset: int, count: int) -> None:
    while count > 0:
        data = await asyncio.to_thread(os.pread, fd, min(CHUNK, count), offset)
        if not data:
            raise EOFError(f"file ended {count} bytes short")
        await response.write(data)
        offset += len(data)
        count -= len(data)


async def file_response(
    request: web.Request,
    path: str | os.PathLike[str],
    *,
    headers: dict[str, str] | None = None,
    etag: str | None = None,
) -> web.StreamResponse:
    """Serve a whole file (blob) with HEAD, Range (206/416) and If-None-Match, zero-copy.

    Raises ``FileNotFoundError`` before anything is sent when the file is gone, and
    :class:`regcore.errors.RangeInvalid` (416) for an unsatisfiable Range.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        out = dict(headers or {})
        out.setdefault("Content-Type", "application/octet-stream")
        out["Accept-Ranges"] = "bytes"
        if etag is not None:
            out["ETag"] = etag
            if etag_matches(request.headers.get("If-None-Match"), etag.strip('"')):
                return web.Response(
                    status=304, headers={k: v for k, v in out.items() if k != "Content-Type"}
                )
        span = (
            parse_range(request.headers.get("Range"), size) if "Range" in request.headers else None
        )
        if span is None:
            status, start, length = 200, 0, size
        else:
            start, end = span
            status, length = 206, end - start + 1
            out["Content-Range"] = f"bytes {start}-{end}/{size}"
        response = web.StreamResponse(status=status, headers=out)
        response.content_length = length
        await prepare_unbuffered(request, response)
        if request.method != "HEAD" and length:
            await send_file_body(request, response, fd, start, length)
        await response.write_eof()
        return response
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
