"""regcore.zerocopy: file bodies by os.sendfile on both asyncio and uvloop, HEAD/Range/304."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import uvloop
from aiohttp import web

from regcore import zerocopy
from regcore.http import standard_middlewares

SIZE = 12 * 1024 * 1024 + 123


@pytest.fixture(scope="module")
def content() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> Path:
    path = tmp_path_factory.mktemp("zc") / "data"
    path.write_bytes(content)
    return path


def _app(path: Path) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await zerocopy.file_response(request, path, etag='"tag"')

    app = web.Application(middlewares=standard_middlewares())
    app.router.add_route("*", "/blob", handler)
    return app


class _ThreadServer:
    """The app served by a thread running its own event loop (uvloop or asyncio)."""

    def __init__(self, app: web.Application, loop_factory) -> None:
        self.app, self.loop = app, loop_factory()
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        runner = web.AppRunner(self.app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> _ThreadServer:
        self.thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(params=["uvloop", "asyncio"])
def server(
    request: pytest.FixtureRequest, blob: Path, monkeypatch
) -> Iterator[tuple[_ThreadServer, list[int]]]:
    calls: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        n = real(out_fd, in_fd, offset, count)
        calls.append(n)
        return n

    monkeypatch.setattr(zerocopy.os, "sendfile", counting)
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop
    with _ThreadServer(_app(blob), factory) as srv:
        yield srv, calls


async def test_whole_file_is_sent_zero_copy_with_exact_bytes(server, content: bytes) -> None:
    srv, calls = server
    async with aiohttp.ClientSession() as s, s.get(srv.url + "/blob") as r:
        body = await r.read()
        assert r.status == 200
        assert r.headers["Content-Length"] == str(SIZE)
        assert r.headers["ETag"] == '"tag"'
    assert hashlib.sha256(body).digest() == hashlib.sha256(content).digest()
    assert sum(calls) == SIZE  # every body byte went through os.sendfile, none copied


async def test_range_is_206_with_the_right_bytes(server, content: bytes) -> None:
    srv, _ = server
    data = content
    async with aiohttp.ClientSession() as s:
        async with s.get(srv.url + "/blob", headers={"Range": "bytes=1000-2000999"}) as r:
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes 1000-2000999/{SIZE}"
            assert await r.read() == data[1000:2001000]
        async with s.get(srv.url + "/blob", headers={"Range": "bytes=-10"}) as r:
            assert r.status == 206 and await r.read() == data[-10:]
        async with s.get(srv.url + "/blob", headers={"Range": f"bytes={SIZE}-"}) as r:
            assert r.status == 416
            assert r.headers["Content-Range"] == f"bytes */{SIZE}"
            assert (await r.json())["errors"][0]["code"] == "RANGE_INVALID"


async def test_head_and_if_none_match_send_no_body(server) -> None:
    srv, calls = server
    async with aiohttp.ClientSession() as s:
        async with s.head(srv.url + "/blob") as r:
            assert r.status == 200 and r.headers["Content-Length"] == str(SIZE)
        async with s.get(srv.url + "/blob", headers={"If-None-Match": '"tag"'}) as r:
            assert r.status == 304 and await r.read() == b""
    assert calls == []


async def test_keep_alive_connection_serves_several_bodies_in_order(server, content: bytes) -> None:
    srv, _ = server
    data = content
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=conn) as s:
        for start in (0, 5, SIZE - 100):
            hdr = {"Range": f"bytes={start}-{start + 99}"}
            async with s.get(srv.url + "/blob", headers=hdr) as r:
                assert await r.read() == data[start : start + 100]
        async with s.get(srv.url + "/blob") as r:
            assert len(await r.read()) == SIZE


async def test_client_disconnect_mid_body_does_not_break_the_server(server) -> None:
    srv, _ = server
    reader, writer = await asyncio.open_connection("127.0.0.1", int(srv.url.rsplit(":", 1)[1]))
    writer.write(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await reader.read(65536)
    writer.transport.abort()  # gone with most of the body unsent
    async with aiohttp.ClientSession() as s, s.get(srv.url + "/blob") as r:
        assert len(await r.read()) == SIZE


# -- TCP_CORK around a body sent past the transport ------------------------------------------


def _corked_app(path: Path, content: bytes, transports: list[asyncio.BaseTransport]):
    """``/blob``: the file by sendfile; ``/live``: the same bytes from memory (send_span with
    a ``locate`` that has every byte live, as a fill's newest pieces are)."""

    async def blob(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        transports.append(request.transport)
        return await zerocopy.file_response(request, path)

    async def live(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        transports.append(request.transport)
        view = memoryview(content)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(content)
        await zerocopy.prepare_unbuffered(request, response)
        fd = os.open(path, os.O_RDONLY)
        try:
            await zerocopy.send_span(
                request, response, fd, 0, len(content), lambda pos, stop: (view[pos:stop], stop)
            )
        finally:
            os.close(fd)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/blob", blob)
    app.router.add_get("/live", live)
    return app


def _cork_of(transport: asyncio.BaseTransport) -> int:
    sock = transport.get_extra_info("socket")
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


@pytest.mark.parametrize("path", ["/blob", "/live"])
@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_body_goes_out_corked_and_the_connection_is_uncorked_after_it(
    blob: Path, content: bytes, path: str, loop_name: str
) -> None:
    """While the body is sent past the transport the socket is corked (only full segments,
    as nginx's tcp_nopush: one client's throughput was ~30% lower without it); once the body
    is out the cork is gone, so the last partial segment is not held back and the next
    response on the keep-alive connection is not delayed."""
    transports: list[asyncio.BaseTransport] = []
    factory = uvloop.new_event_loop if loop_name == "uvloop" else asyncio.new_event_loop
    with _ThreadServer(_corked_app(blob, content, transports), factory) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(("127.0.0.1", port))
        sock.settimeout(10)
        try:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(1)
            assert head.startswith(b"HTTP/1.1 200")
            # the client reads nothing more: the server fills the buffers and waits, corked
            assert _wait_for(lambda: bool(transports)), "the handler never ran"
            server_side = transports[0]
            assert _wait_for(lambda: _cork_of(server_side) == 1), "body not sent corked"
            body = bytearray()
            while len(body) < len(content):
                chunk = sock.recv(1 << 20)
                assert chunk, "connection closed mid-body"
                body += chunk
            assert hashlib.sha256(body).digest() == hashlib.sha256(content).digest()
            assert _wait_for(lambda: _cork_of(server_side) == 0), "left corked after the body"
            # the keep-alive connection answers the next request in full
            sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n")
            answer = b""
            while not answer.endswith(content[:10]):
                more = sock.recv(65536)
                assert more, "connection closed"
                answer += more
            assert answer.startswith(b"HTTP/1.1 206")
        finally:
            sock.close()


# -- the loop never waits for the disk ----------------------------------------------------------


def _evict(path: Path) -> bool:
    """Drop ``path``'s pages from the page cache; False when this filesystem keeps them
    (tmpfs), so nothing here can be not resident."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return not zerocopy.in_page_cache(fd, 0, 1)
    finally:
        os.close(fd)


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
async def test_ranges_not_in_the_page_cache_are_sent_from_a_worker_thread(
    tmp_path: Path, monkeypatch, loop_kind: str
) -> None:
    path = tmp_path / "cold"
    data = os.urandom(3 * zerocopy.SENDFILE_STEP + 4567)
    path.write_bytes(data)
    if not _evict(path):
        pytest.skip("this filesystem keeps every page cached (tmpfs): nothing to read from disk")
    calls: list[tuple[int, int]] = []  # (bytes, thread)
    real = os.sendfile

    def recording(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        n = real(out_fd, in_fd, offset, count)
        calls.append((n, threading.get_ident()))
        return n

    monkeypatch.setattr(zerocopy.os, "sendfile", recording)
    factory = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    before = (zerocopy.OFFLOADED.calls, zerocopy.OFFLOADED.bytes)
    with _ThreadServer(_app(path), factory) as srv:
        loop_thread = srv.thread.ident
        async with aiohttp.ClientSession() as s:
            async with s.get(srv.url + "/blob") as r:  # cold: the file's pages are on disk only
                assert r.status == 200 and await r.read() == data
            cold = list(calls)
            calls.clear()
            async with s.get(srv.url + "/blob") as r:  # now every page is cached
                assert await r.read() == data
    off_loop = sum(n for n, thread in cold if thread != loop_thread)
    assert sum(n for n, _ in cold) == len(data)
    assert off_loop > 0  # the disk reads happened in a worker thread ...
    assert zerocopy.OFFLOADED.calls - before[0] == sum(1 for _, t in cold if t != loop_thread)
    assert zerocopy.OFFLOADED.bytes - before[1] == off_loop  # ... and were counted
    assert sum(n for n, _ in calls) == len(data)
    assert all(thread == loop_thread for _, thread in calls)  # cached: straight from the loop
    assert all(n <= zerocopy.SENDFILE_STEP for n, _ in cold + calls)


def test_probe_says_cached_where_the_kernel_cannot_tell(tmp_path: Path) -> None:
    r, w = os.pipe()  # preadv on a pipe: ESPIPE, not a page cache answer
    try:
        assert zerocopy.in_page_cache(r, 0, 10) is True
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
async def test_a_client_leaving_during_a_disk_read_leaves_the_server_serving(
    tmp_path: Path, loop_kind: str
) -> None:
    path = tmp_path / "cold"
    data = os.urandom(4 * zerocopy.SENDFILE_STEP)
    path.write_bytes(data)
    if not _evict(path):
        pytest.skip("this filesystem keeps every page cached (tmpfs): nothing to read from disk")
    factory = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    before = zerocopy.OFFLOADED.calls
    with _ThreadServer(_app(path), factory) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        for _ in range(3):  # gone while worker threads read the file for it
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await reader.read(65536)
            writer.transport.abort()
            _evict(path)
        async with aiohttp.ClientSession() as s, s.get(srv.url + "/blob") as r:
            assert r.status == 200 and await r.read() == data
    assert zerocopy.OFFLOADED.calls > before
