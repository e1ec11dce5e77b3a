"""The fill's socket byte path: the body read by the fill's own threads from the connection.

A plain-HTTP body with ``Content-Length`` is taken over from aiohttp after the headers
(:mod:`edge.fillsocket`) and read, written and hashed off the event loop
(:meth:`WritePipeline.absorb`). Shown here, on asyncio and on uvloop (the edge's loop), with a
real docker-registry upstream and, for faults, an in-test server in its own thread
(:class:`harness.faultserver.FaultServer`) that cuts, stalls, corrupts or holds a body:

- bytes and digest are right, from a real registry and after a cut mid-body (resumed by
  ``Range``, the new body read from the socket too) or a stall past the read timeout;
- wrong bytes fail every reader, cache nothing and leave no temp file, and a reader never got
  the blob's last :data:`FINAL_HOLD` bytes; with right bytes the tail comes only after commit;
- a fill cancelled at shutdown while its thread waits on a silent socket ends at once;
- a resumed body that ignores ``Range`` (its prefix must be dropped) fills through aiohttp's
  reader, as before;
- the peer endpoint serves a fill in progress with ``os.sendfile`` (no byte copied).
Each test asserts which reader read the bodies (``fill_bodies{reader}``), so a regression to
the old path cannot pass unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry

from edge import peers
from edge.cache import BlobCache
from edge.fill import FINAL_HOLD, EdgeFillMetrics, Fill, FillFailed, FillManager
from edge.sources import BlobSource, HttpSource, UpstreamSource
from harness.bigblobs import push_large_blob, random_blob
from harness.faultserver import FaultServer
from harness.registry import DockerRegistry
from regcore import zerocopy
from regcore.client import RegistryClient
from regcore.digest import Digest
from tests.edge.conftest import span_bytes

KiB = 1024
MiB = 1024 * KiB
Scenario = Callable[[], Awaitable[None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def run_on(request: pytest.FixtureRequest) -> Callable[[Scenario], Awaitable[None]]:
    """Run a scenario on the test's asyncio loop, or on a uvloop in a worker thread."""

    async def run(scenario: Scenario) -> None:
        if request.param == "asyncio":
            await scenario()
        else:
            await asyncio.to_thread(uvloop.run, scenario())

    return run


class Node:
    """A cache, fill metrics and a FillManager with no region (what one edge node fills with)."""

    def __init__(self, directory: Path, **settings: float) -> None:
        self.directory = directory
        self.settings = settings
        self.metrics = EdgeFillMetrics(CollectorRegistry())

    async def __aenter__(self) -> Node:
        self.cache = BlobCache(self.directory, 256 * MiB)
        await self.cache.open()
        self.fills = FillManager(
            self.cache,
            region=None,
            advertise_url=None,
            peer_source=_no_peers,
            metrics=self.metrics,
            **self.settings,  # type: ignore[arg-type]
        )
        await self.fills.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.fills.close()
        await self.cache.close()

    def bodies(self, reader: str) -> float:
        return self.metrics.value("fill_bodies", reader=reader)

    def incomplete(self) -> list[str]:
        return os.listdir(self.cache.layout.incomplete)


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` (bounded) until true; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def _no_peers(url: str, digest: Digest) -> BlobSource:
    raise AssertionError("no region configured")


async def collect_spans(fill: Fill, got: bytearray) -> None:
    """Append every span of ``fill`` to ``got`` as it lands (raises what spans() raises)."""
    async with contextlib.aclosing(fill.spans()) as spans:
        async for fd, offset, count in spans:
            assert offset == len(got)
            got.extend(span_bytes(fill, fd, offset, count))


def body_handler(
    data: bytes,
    *,
    first: Callable[[web.StreamResponse, web.Request, int], Awaitable[bool]] | None = None,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A blob endpoint with Range and Content-Length. ``first(resp, request, start)`` writes
    the first response's body its own way (True: the handler is done, e.g. after a cut)."""
    served = [0]

    async def handler(request: web.Request) -> web.StreamResponse:
        rng = request.headers.get("Range")
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        resp = web.StreamResponse(status=206 if rng else 200)
        resp.content_length = len(data) - start
        if rng:
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        await resp.prepare(request)
        served[0] += 1
        if served[0] == 1 and first is not None and await first(resp, request, start):
            return resp
        for at in range(start, len(data), 256 * KiB):
            await resp.write(data[at : at + 256 * KiB])
        return resp

    return handler


def fault_server(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> FaultServer:
    return FaultServer({("GET", "/blob"): handler}).start()


# -- a real registry ---------------------------------------------------------------------------


async def test_blob_from_a_real_registry_is_read_from_the_socket_bytes_and_digest_right(
    docker_registry: DockerRegistry, tmp_path: Path, run_on: Callable[[Scenario], Awaitable[None]]
) -> None:
    data = random_blob(24 * MiB + 7, seed=31)
    async with aiohttp.ClientSession() as session:
        digest = Digest.parse(await push_large_blob(session, docker_registry.url, "team/app", data))

    async def scenario() -> None:
        async with (
            aiohttp.ClientSession() as session,
            RegistryClient(docker_registry.url, session=session) as client,
            Node(tmp_path / "cache") as node,
        ):
            fill = await node.fills.get(digest, lambda: UpstreamSource(client, "team/app", digest))
            got = bytearray()
            await collect_spans(fill, got)
            assert Digest.of(bytes(got)) == digest and len(got) == len(data)
            blob = await fill.result()
            assert blob.path.read_bytes() == data
            assert node.bodies("socket") == 1 and node.bodies("loop") == 0
            assert node.metrics.value("fill_bytes", source="upstream") == len(data)

    await run_on(scenario)
    assert docker_registry.count("GET", f"/blobs/{digest}") == 1


# -- faults --------------------------------------------------------------------------------------


async def test_cut_mid_body_after_the_takeover_resumes_by_range_from_the_socket(
    tmp_path: Path, run_on: Callable[[Scenario], Awaitable[None]]
) -> None:
    data = os.urandom(6 * MiB + 3)
    digest = Digest.of(data)

    async def cut(resp: web.StreamResponse, request: web.Request, start: int) -> bool:
        await resp.write(data[: 1 * MiB])
        await asyncio.sleep(0.2)  # the fill's thread owns the socket by now
        await resp.write(data[1 * MiB : 3 * MiB])
        await asyncio.sleep(0.1)
        assert request.transport is not None
        request.transport.abort()
        return True

    with fault_server(body_handler(data, first=cut)) as srv:

        async def scenario() -> None:
            async with aiohttp.ClientSession() as session, Node(tmp_path / "cache") as node:
                fill = await node.fills.get(digest, lambda: HttpSource(session, f"{srv.url}/blob"))
                got = bytearray()
                await collect_spans(fill, got)
                assert bytes(got) == data
                assert (await fill.result()).path.read_bytes() == data
                assert node.bodies("socket") == 2 and node.bodies("loop") == 0
                assert node.incomplete() == []

        await run_on(scenario)
        ranges = [r.header("Range") for r in srv.requests]
    assert ranges[0] is None and len(ranges) == 2
    resumed_at = int(str(ranges[1]).removeprefix("bytes=").rstrip("-"))
    assert 1 * MiB < resumed_at <= 3 * MiB  # bytes the thread had read before the cut are kept


async def test_stall_past_the_read_timeout_is_resumed(
    tmp_path: Path, run_on: Callable[[Scenario], Awaitable[None]]
) -> None:
    data = os.urandom(3 * MiB)
    digest = Digest.of(data)

    async def stall(resp: web.StreamResponse, request: web.Request, start: int) -> bool:
        await resp.write(data[: 1 * MiB])
        await asyncio.sleep(30)  # silent: the fill's read timeout (0.5 s) ends this body
        return True

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=0.5)
    with fault_server(body_handler(data, first=stall)) as srv:

        async def scenario() -> None:
            async with aiohttp.ClientSession() as session, Node(tmp_path / "cache") as node:
                t0 = time.monotonic()
                fill = await node.fills.get(
                    digest, lambda: HttpSource(session, f"{srv.url}/blob", timeout=timeout)
                )
                assert (await fill.result()).path.read_bytes() == data
                assert time.monotonic() - t0 < 10
                assert node.bodies("socket") == 2

        await run_on(scenario)
        assert srv.requests[1].header("Range") == f"bytes={1 * MiB}-"


async def test_wrong_bytes_fail_every_reader_before_the_tail_and_cache_nothing(
    tmp_path: Path, run_on: Callable[[Scenario], Awaitable[None]]
) -> None:
    good = os.urandom(4 * MiB + 5)
    digest = Digest.of(good)
    bad = bytearray(good)
    bad[len(bad) - 10] ^= 0xFF  # the last bytes are wrong: only the digest can tell

    with fault_server(body_handler(bytes(bad))) as srv:

        async def scenario() -> None:
            async with aiohttp.ClientSession() as session, Node(tmp_path / "cache") as node:
                fill = await node.fills.get(digest, lambda: HttpSource(session, f"{srv.url}/blob"))
                readers = [bytearray() for _ in range(3)]
                outcomes = await asyncio.gather(
                    *(collect_spans(fill, got) for got in readers), return_exceptions=True
                )
                assert all(isinstance(o, FillFailed) for o in outcomes), outcomes
                for got in readers:
                    assert len(got) <= len(good) - FINAL_HOLD  # the tail never went out
                    assert bytes(got) == good[: len(got)]
                with pytest.raises(FillFailed):
                    await fill.result()
                assert node.cache.lookup(digest) is None and node.incomplete() == []
                assert node.metrics.value("fills_failed", reason="digest_invalid") == 1
                assert node.bodies("socket") == 1

        await run_on(scenario)


async def test_tail_is_withheld_until_the_verified_commit(
    tmp_path: Path, run_on: Callable[[Scenario], Awaitable[None]]
) -> None:
    data = os.urandom(2 * MiB + 333)
    digest = Digest.of(data)
    release = threading.Event()

    async def hold(resp: web.StreamResponse, request: web.Request, start: int) -> bool:
        await resp.write(data[:-1])  # everything but the last byte, then wait
        assert await asyncio.to_thread(release.wait, 30)
        await resp.write(data[-1:])
        return True

    with fault_server(body_handler(data, first=hold)) as srv:

        async def scenario() -> None:
            async with aiohttp.ClientSession() as session, Node(tmp_path / "cache") as node:
                fill = await node.fills.get(digest, lambda: HttpSource(session, f"{srv.url}/blob"))
                got = bytearray()
                reader = asyncio.create_task(collect_spans(fill, got))
                await eventually(
                    lambda: fill.written == len(data) - 1 and len(got) == len(data) - FINAL_HOLD
                )
                await asyncio.sleep(0.1)
                assert fill.written == len(data) - 1 and not fill.finished
                assert len(got) == len(data) - FINAL_HOLD  # nothing of the tail yet
                release.set()
                await asyncio.wait_for(reader, 10)
                assert bytes(got) == data and fill.finished
                assert node.bodies("socket") == 1

        try:
            await run_on(scenario)
        finally:
            release.set()


async def test_fill_cancelled_at_shutdown_while_its_thread_waits_ends_at_once(
    tmp_path: Path, run_on: Callable[[Scenario], Awaitable[None]]
) -> None:
    data = os.urandom(3 * MiB)
    digest = Digest.of(data)
    stop = threading.Event()

    async def silent(resp: web.StreamResponse, request: web.Request, start: int) -> bool:
        await resp.write(data[: 1 * MiB])
        await asyncio.to_thread(stop.wait, 30)  # connection open, nothing more (timeout: 60 s)
        return True

    with fault_server(body_handler(data, first=silent)) as srv:

        async def scenario() -> None:
            async with aiohttp.ClientSession() as session:
                node = Node(tmp_path / "cache", drain_timeout=0.2)
                await node.__aenter__()
                fill = await node.fills.get(digest, lambda: HttpSource(session, f"{srv.url}/blob"))
                await eventually(lambda: fill.written >= 1 * MiB)
                threads = threading.active_count()
                t0 = time.monotonic()
                await node.__aexit__()  # drain 0.2 s, then cancel: the thread is interrupted
                assert time.monotonic() - t0 < 3
                with pytest.raises(FillFailed):
                    await fill.result()
                assert node.incomplete() == []
                assert node.bodies("socket") == 1
                await eventually(lambda: threading.active_count() < threads)  # its threads end

        try:
            await run_on(scenario)
        finally:
            stop.set()


async def test_resumed_body_that_ignores_range_goes_through_the_loop_reader(
    tmp_path: Path, run_on: Callable[[Scenario], Awaitable[None]]
) -> None:
    data = os.urandom(3 * MiB + 9)
    digest = Digest.of(data)
    calls = [0]

    async def handler(request: web.Request) -> web.StreamResponse:
        calls[0] += 1
        resp = web.StreamResponse(status=200)  # Range or not: the whole blob (a lazy server)
        resp.content_length = len(data)
        await resp.prepare(request)
        if calls[0] == 1:
            await resp.write(data[: 1 * MiB])
            await asyncio.sleep(0.2)
            assert request.transport is not None
            request.transport.abort()
            return resp
        await resp.write(data)
        return resp

    with fault_server(handler) as srv:

        async def scenario() -> None:
            async with aiohttp.ClientSession() as session, Node(tmp_path / "cache") as node:
                fill = await node.fills.get(digest, lambda: HttpSource(session, f"{srv.url}/blob"))
                assert (await fill.result()).path.read_bytes() == data
                # the first body from the socket; the second must drop its prefix: aiohttp's reader
                assert node.bodies("socket") == 1 and node.bodies("loop") == 1

        await run_on(scenario)
        assert srv.requests[1].header("Range") == f"bytes={1 * MiB}-"


# -- the peer endpoint ---------------------------------------------------------------------------


async def test_peer_endpoint_serves_a_fill_in_progress_zero_copy(
    tmp_path: Path, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every body byte goes to the socket straight from where it lies: the file
    (``os.sendfile``) or the fill's live slots (``os.write`` of the slot's memory), never
    through aiohttp's writer (a Python-level copy and buffer)."""
    data = os.urandom(3 * MiB + 17)
    digest = Digest.of(data)
    release = threading.Event()
    sent: list[int] = []
    written: list[int] = []
    real_sendfile, real_write = os.sendfile, os.write

    def counting(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        n = real_sendfile(out_fd, in_fd, offset, count)
        sent.append(n)
        return n

    def counting_write(fd: int, data: Any) -> int:
        n = real_write(fd, data)
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            written.append(n)
        return n

    monkeypatch.setattr(zerocopy.os, "sendfile", counting)
    monkeypatch.setattr(zerocopy.os, "write", counting_write)

    async def hold(resp: web.StreamResponse, request: web.Request, start: int) -> bool:
        await resp.write(data[: 2 * MiB])
        assert await asyncio.to_thread(release.wait, 30)
        await resp.write(data[2 * MiB :])
        return True

    with fault_server(body_handler(data, first=hold)) as srv:
        async with aiohttp.ClientSession() as session, Node(tmp_path / "cache") as node:
            app = web.Application()
            peers.add_routes(app, node.fills, node.cache)
            owner = await aiohttp_server(app)
            fill = await node.fills.get(digest, lambda: HttpSource(session, f"{srv.url}/blob"))
            await eventually(lambda: fill.written >= 2 * MiB)
            url = str(owner.make_url(f"{peers.PEER_PREFIX}{digest}"))
            async with session.get(url) as resp:
                assert resp.status == 200
                assert resp.headers[peers.FILL_HEADER] == "in-progress"
                head = await resp.content.readexactly(2 * MiB)
                release.set()
                body = head + await resp.read()
            assert body == data
            assert sum(sent) + sum(written) == len(data)  # sendfile from the file, or the slots
            async with session.get(url, headers={"Range": f"bytes={MiB}-"}) as resp:
                assert resp.status == 200 or resp.status == 206
                assert await resp.read() == data[MiB:]
