"""A fill's newest bytes reach clients from memory; its file is written past the page cache.

The fill's receive thread keeps its newest pieces in reusable buffers
(:mod:`regcore.storage.absorb`) and writes each piece with ``O_DIRECT`` where the cache's
filesystem allows it. Shown with a real docker-registry upstream:

- a client keeping up gets its bytes from those buffers (``os.write`` of the buffer on its
  socket, no file in between), the rest by ``os.sendfile``, every byte right;
- with direct I/O the cached blob's pages are (almost) not in the page cache after the fill,
  but for the last window, which readers may still be sending when the absorb ends; with
  ``direct_io=False`` they all are (the flag does what it says);
- a client that stops reading does not hold the fill back: the blob is committed while the
  client sleeps, and the client then gets every byte right (from the file);
- a client that pauses briefly is waited for (hold-back): its bytes come from the buffers,
  not from a file whose pages ``O_DIRECT`` kept out of the page cache;
- a TLS body (received on the loop: the SSL object lives there) takes the same path;
- a later hit on such a blob reads its pages from the disk in a worker thread
  (:mod:`regcore.zerocopy`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import os
import socket
import ssl
import stat
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.sources import UpstreamSource
from harness.bigblobs import push_large_blob, random_blob
from harness.registry import DockerRegistry
from harness.servers import OriginProcess
from regcore import zerocopy
from regcore.auth.tlscerts import init_certs
from regcore.client import RegistryClient
from regcore.digest import Digest
from regcore.storage import absorb
from tests.edge.conftest import MakeEdge
from tests.edge.test_fill_socket import Node

MiB = 1024 * 1024
REPO = "team/live"


def _direct_io_here(directory: Path) -> bool:
    probe = directory / "direct-probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


def resident_share(path: Path, start: int = 0, end: int | None = None) -> float:
    """The share of the pages of ``path``'s bytes ``start..end-1`` (default: all) that are in
    the page cache (``mincore``)."""
    size = path.stat().st_size
    page = mmap.PAGESIZE
    pages = (size + page - 1) // page
    libc = ctypes.CDLL(None, use_errno=True)
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
        try:
            addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
            vec = (ctypes.c_ubyte * pages)()
            libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
            assert libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) == 0
            first, last = start // page, (size if end is None else end) // page
            return sum(b & 1 for b in vec[first:last]) / max(1, last - first)
        finally:
            del addr
            mm.close()


async def _push(registry: DockerRegistry, size: int, seed: int) -> tuple[bytes, Digest]:
    data = random_blob(size, seed=seed)
    async with aiohttp.ClientSession() as session:
        digest = Digest.parse(await push_large_blob(session, registry.url, REPO, data))
    return data, digest


def _count_body_sources(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """Count what :mod:`regcore.zerocopy` sends: ``os.write`` on a socket (the fill's
    buffers in memory) and ``os.sendfile`` (the file); returns the two lists of counts."""
    from_memory: list[int] = []
    from_file: list[int] = []
    real_write, real_sendfile = os.write, os.sendfile

    def counting_write(fd: int, buf: Any) -> int:
        n = real_write(fd, buf)
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            from_memory.append(n)
        return n

    def counting_sendfile(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        n = real_sendfile(out_fd, in_fd, offset, count)
        from_file.append(n)
        return n

    monkeypatch.setattr(zerocopy.os, "write", counting_write)
    monkeypatch.setattr(zerocopy.os, "sendfile", counting_sendfile)
    return from_memory, from_file


async def test_a_client_keeping_up_gets_the_fills_bytes_from_memory(
    docker_registry: DockerRegistry, make_edge: MakeEdge, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, digest = await _push(docker_registry, 24 * MiB + 5, seed=71)
    from_memory, from_file = _count_body_sources(monkeypatch)
    edge = await make_edge({"hub": docker_registry.url})
    resp = await edge.client.get(f"/v2/{REPO}/blobs/{digest}")
    assert resp.status == 200
    assert await resp.read() == data
    assert sum(from_memory) > 0, "no byte came from the fill's buffers"
    assert sum(from_memory) + sum(from_file) == len(data)  # nothing through aiohttp's writer
    assert docker_registry.count("GET", f"/blobs/{digest}") == 1


@pytest.mark.parametrize("direct_io", [True, False])
async def test_the_fill_writes_past_the_page_cache_only_with_direct_io(
    docker_registry: DockerRegistry, tmp_path: Path, direct_io: bool
) -> None:
    if direct_io and not _direct_io_here(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} refuses O_DIRECT")
    data, digest = await _push(docker_registry, 24 * MiB + 5, seed=72 + direct_io)
    async with (
        aiohttp.ClientSession() as session,
        RegistryClient(docker_registry.url, session=session) as client,
        Node(tmp_path / "cache", direct_io=direct_io) as node,
    ):
        fill = await node.fills.get(digest, lambda: UpstreamSource(client, REPO, digest))
        blob = await fill.result()  # nobody reads the file meanwhile: reads would cache it
    # Through the page cache by design: the head up to the first piece boundary (it is not
    # aligned when the body's first bytes came with the headers) and the last window.
    window = len(data) - absorb.SLOTS * absorb.PIECE
    if direct_io:
        resident = resident_share(blob.path, absorb.PIECE, window)
        assert resident < 0.1, f"{resident:.0%} of the blob went through the page cache"
    else:
        resident = resident_share(blob.path)
        assert resident > 0.9, f"only {resident:.0%} of a buffered fill is cached"
    # readers still sending the last window when the absorb ends find it in memory
    tail = resident_share(blob.path, window)
    assert tail > 0.9, f"only {tail:.0%} of the absorb's last window is in the page cache"
    assert blob.path.read_bytes() == data  # what the disk has is right either way


async def test_a_hit_on_a_blob_written_past_the_page_cache_reads_the_disk_off_the_loop(
    docker_registry: DockerRegistry, make_edge: MakeEdge, tmp_path: Path
) -> None:
    if not _direct_io_here(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} refuses O_DIRECT")
    data, digest = await _push(docker_registry, 24 * MiB + 5, seed=77)
    edge = await make_edge({"hub": docker_registry.url})
    path = f"/v2/{REPO}/blobs/{digest}"
    assert await (await edge.client.get(path)).read() == data  # the fill: O_DIRECT writes
    offloaded = edge.registry.get_sample_value("quayside_sendfile_offloaded_bytes_total")
    assert offloaded is not None
    resp = await edge.client.get(path)  # a hit on a file whose pages are on disk only
    assert resp.status == 200 and await resp.read() == data
    after = edge.registry.get_sample_value("quayside_sendfile_offloaded_bytes_total")
    # everything but the last window (written through the page cache) came from the disk, and
    # was read by a worker thread, not by the event loop
    assert after - offloaded >= len(data) - absorb.SLOTS * absorb.PIECE - absorb.PIECE
    assert docker_registry.count("GET", f"/blobs/{digest}") == 1


async def test_a_client_that_stops_reading_does_not_hold_the_fill_back(
    docker_registry: DockerRegistry, make_edge: MakeEdge
) -> None:
    data, digest = await _push(docker_registry, 32 * MiB + 3, seed=74)
    edge = await make_edge({"hub": docker_registry.url})
    server = edge.client.server
    host, port = str(server.host), int(server.port)  # type: ignore[arg-type]
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        request = f"GET /v2/{REPO}/blobs/{digest} HTTP/1.1\r\nHost: {host}\r\n\r\n"
        sock.sendall(request.encode())
        sock.settimeout(20)
        first = await asyncio.to_thread(sock.recv, 64 * 1024)
        assert first.startswith(b"HTTP/1.1 200")
        # the client sleeps; the fill must end anyway (sockets hold a few MiB at most)
        deadline = time.monotonic() + 30
        while edge.edge.cache.peek(digest) is None:
            assert time.monotonic() < deadline, "the fill waited for a client that sleeps"
            await asyncio.sleep(0.05)
        received = bytearray(first)
        while True:  # wake up: every byte, from the file now
            chunk = await asyncio.to_thread(sock.recv, 1 << 20)
            if not chunk:
                break
            received += chunk
            _, sep, body = bytes(received).partition(b"\r\n\r\n")
            if sep and len(body) >= len(data):
                break
    finally:
        sock.close()
    _head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert body == data
    # the fill waited for the sleeper only HOLD_GRACE, once, and says so
    assert edge.metric("fill_holdbacks_ended") == 1


async def _read_with_pauses(host: str, port: int, path: str, size: int) -> bytes:
    """GET ``path`` on a socket with a small receive buffer, pausing 5 ms after every MiB:
    a client slower than the fill, though never for long."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 * 1024)
    sock.settimeout(20)

    def run() -> bytes:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        received, mark = bytearray(), 0
        while True:
            chunk = sock.recv(256 * 1024)
            if not chunk:
                break
            received += chunk
            _, sep, body = bytes(received).partition(b"\r\n\r\n")
            if sep and len(body) >= size:
                break
            if len(received) - mark >= MiB:
                mark = len(received)
                time.sleep(0.005)
        return bytes(received)

    try:
        received = await asyncio.to_thread(run)
    finally:
        sock.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return body


async def test_a_client_pausing_briefly_is_waited_for_and_served_from_memory(
    docker_registry: DockerRegistry,
    make_edge: MakeEdge,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Without hold-back the fill runs ahead of this client at once (a pause of 5 ms is
    several pieces at loopback speed); the client then reads the rest from the file, most of
    the blob. With it, only the last window comes from the file, once the absorb ended. The
    grace is raised so a slow CI machine's scheduling cannot end hold-back here (that it ends
    is shown by the client that stops reading, above)."""
    if not _direct_io_here(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} refuses O_DIRECT")
    monkeypatch.setattr(absorb, "HOLD_GRACE", 30.0)
    size = 48 * MiB + 7
    data, digest = await _push(docker_registry, size, seed=77)
    from_memory, from_file = _count_body_sources(monkeypatch)
    edge = await make_edge({"hub": docker_registry.url})
    server = edge.client.server
    host, port = str(server.host), int(server.port)  # type: ignore[arg-type]
    body = await _read_with_pauses(host, port, f"/v2/{REPO}/blobs/{digest}", size)
    assert body == data
    window = absorb.SLOTS * absorb.PIECE  # at most what the ended absorb let go of
    assert sum(from_file) <= window, (
        f"{sum(from_file) / MiB:.1f} MiB came from the file: the fill ran ahead of its reader"
    )
    assert sum(from_memory) + sum(from_file) == size
    assert docker_registry.count("GET", f"/blobs/{digest}") == 1
    assert edge.metric("fill_holdbacks_ended") == 0  # waited for, not let go


async def test_a_tls_body_received_on_the_loop_takes_the_same_byte_path(
    tmp_path: Path,
) -> None:
    """TLS bytes must pass the loop's SSL object; they are then fed to the fill's threads
    (:mod:`edge.fillfeed`): written past the page cache like a socket body's, bytes right."""
    if not _direct_io_here(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} refuses O_DIRECT")
    certs = init_certs(tmp_path / "certs", ["127.0.0.1"])
    config = {"http": {"tls": {"certificate": str(certs.cert), "key": str(certs.key)}}}
    origin = OriginProcess(workdir=tmp_path / "origin", config=config).start()
    try:
        ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
        data = random_blob(12 * MiB + 9, seed=75)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            digest = Digest.parse(await push_large_blob(session, origin.url, REPO, data))
            async with (
                RegistryClient(origin.url, session=session) as client,
                Node(tmp_path / "cache") as node,
            ):
                fill = await node.fills.get(digest, lambda: UpstreamSource(client, REPO, digest))
                blob = await fill.result()
                assert node.bodies("loop") == 1 and node.bodies("socket") == 0
                before_tail = len(data) - absorb.SLOTS * absorb.PIECE  # and after the head
                resident = resident_share(blob.path, absorb.PIECE, before_tail)
                assert resident < 0.1, f"{resident:.0%} of the blob went through the page cache"
                assert blob.path.read_bytes() == data
    finally:
        origin.close()
