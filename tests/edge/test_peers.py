"""Region fills across nodes sharing one real redis-server, through real aiohttp peer endpoints.

Each "node" is a BlobCache + RegionLock + FillManager + an aiohttp app serving the peer endpoint
on 127.0.0.1; the upstream is an in-test aiohttp server that counts GETs, honours Range and can
hold a response at an offset (a slow link) or corrupt it. The owner-killed test runs the owner
node in a child process and SIGKILLs it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from edge.cache import BlobCache
from edge.fill import EdgeFillMetrics, Fill, FillFailed, FillManager
from edge.peers import FILL_HEADER, TOKEN_HEADER, add_routes, peer_blob_url, peer_source_factory
from edge.regionlock import RegionLock
from edge.sources import HttpSource
from harness.ports import free_port, wait_http
from harness.procs import Process
from harness.redis import RedisServer
from regcore.digest import Digest

KiB = 1024
MiB = 1024 * KiB
REPO_ROOT = Path(__file__).resolve().parents[2]


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def lock_released(node: Node, digest: Digest, timeout: float = 5.0) -> bool:
    """True once no node holds ``digest``'s region lock. A fill hands its lease back in a
    task of its own after the commit (``FillManager._release``), so right after
    ``fill.result()`` the lock may still be held for a moment, longest on a loaded machine."""
    for _ in range(int(timeout / 0.01)):
        if await node.lock.owner(digest) is None:
            return True
        await asyncio.sleep(0.01)
    return False


class FaultUpstream:
    """Serves one blob at /blob; logs every request's Range; can stall or corrupt."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.ranges: list[str | None] = []
        self.hold_at: int | None = None  # un-ranged responses stall here until ``release``
        self.release = asyncio.Event()
        self.corrupt = False
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FaultUpstream:
        app = web.Application()
        app.router.add_get("/blob", self._blob)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/blob"
        return self

    async def close(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        rng = request.headers.get("Range")
        self.ranges.append(rng)
        body = bytearray(self.data)
        if self.corrupt:
            body[-100] ^= 0xFF
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        resp = web.StreamResponse(status=206 if rng else 200)
        resp.content_length = len(body) - start
        if rng:
            resp.headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        await resp.prepare(request)
        pos = start
        try:
            while pos < len(body):
                if rng is None and self.hold_at is not None and pos >= self.hold_at:
                    await self.release.wait()
                await resp.write(bytes(body[pos : pos + 64 * KiB]))
                pos += 64 * KiB
            await resp.write_eof()
        except ConnectionResetError:  # the reading node died
            pass
        return resp


class Node:
    """One edge node's fill machinery with its peer endpoint on a pre-bound loopback socket."""

    def __init__(
        self, tmp: Path, name: str, redis_url: str, upstream_url: str, *, ttl: float
    ) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.dir = tmp / name
        self.redis_url = redis_url
        self.upstream_url = upstream_url
        self.ttl = ttl
        self.metrics = EdgeFillMetrics(CollectorRegistry())

    async def start(self) -> Node:
        self.session = aiohttp.ClientSession()
        self.cache = BlobCache(self.dir, 256 * MiB)
        await self.cache.open()
        self.lock = RegionLock(self.redis_url, ttl=self.ttl, op_timeout=0.3, breaker_seconds=0.5)
        self.fills = FillManager(
            self.cache, region=self.lock, advertise_url=self.url,
            peer_source=peer_source_factory(self.session), metrics=self.metrics, drain_timeout=2,
        )  # fmt: skip
        await self.fills.start()
        app = web.Application()
        add_routes(app, self.fills, self.cache)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()
        return self

    async def fill(self, digest: Digest) -> Fill:
        return await self.fills.get(digest, lambda: HttpSource(self.session, self.upstream_url))

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.fills.close()
        await self.lock.close()
        await self.session.close()
        await self.cache.close()


async def collect(fill: Fill, first: list[bytes] | None = None) -> bytes:
    out = bytearray()
    async for chunk in fill.read():
        if first is not None and not out:
            first.append(chunk)
        out += chunk
    return bytes(out)


@pytest.fixture
async def region(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Callable[..., object]]:
    started: list[Node | FaultUpstream] = []

    async def make_upstream(data: bytes) -> FaultUpstream:
        up = await FaultUpstream(data).start()
        started.append(up)
        return up

    async def make_node(name: str, upstream: FaultUpstream, ttl: float = 1.0) -> Node:
        node = await Node(tmp_path, name, redis_server.url, upstream.url, ttl=ttl).start()
        started.append(node)
        return node

    yield make_upstream, make_node
    for item in reversed(started):
        await item.close()


async def test_second_node_streams_from_the_owner_and_upstream_sees_one_get(region: tuple) -> None:  # type: ignore[type-arg]
    make_upstream, make_node = region
    data = os.urandom(4 * MiB)
    digest = Digest.of(data)
    upstream = await make_upstream(data)
    upstream.hold_at = 1 * MiB
    a = await make_node("a", upstream, ttl=0.5)
    b = await make_node("b", upstream, ttl=0.5)

    fill_a = await a.fill(digest)
    await eventually(lambda: fill_a.written >= 1 * MiB)
    await asyncio.sleep(3 * a.ttl)  # a slow fill: the renewed lock outlives its TTL
    assert await b.lock.owner(digest) == a.url

    first_b: list[bytes] = []
    readers_b = [asyncio.create_task(collect(await b.fill(digest), first_b)) for _ in range(5)]
    reader_a = asyncio.create_task(collect(fill_a))
    await eventually(lambda: len(first_b) == 5)  # B's waiters get bytes while A's upstream stalls
    assert not fill_a.finished and upstream.ranges == [None]
    upstream.release.set()
    assert await reader_a == data
    assert all(r == data for r in await asyncio.gather(*readers_b))
    blob_b = await (b.fills.active(digest) or await b.fill(digest)).result()
    assert blob_b.path.read_bytes() == data  # B cached its own verified copy
    assert upstream.ranges == [None]  # one upstream GET for the region
    assert a.metrics.value("fills_started") == 1 and a.metrics.value("fills_remote") == 0
    assert b.metrics.value("fills_started") == 1 and b.metrics.value("fills_remote") == 1
    assert b.metrics.value("fills_joined") == 4
    assert b.metrics.value("fill_bytes", source="peer") == len(data)
    assert b.metrics.value("fill_bytes", source="upstream") == 0
    await eventually(lambda: a.fills.active(digest) is None)
    assert await lock_released(a, digest)  # released after commit


_OWNER_SCRIPT = """
import asyncio, sys
from pathlib import Path
import aiohttp
from aiohttp import web
from edge.cache import BlobCache
from edge.fill import FillManager
from edge.peers import add_routes, peer_source_factory
from edge.regionlock import RegionLock
from edge.sources import HttpSource
from regcore.digest import Digest

async def main(port, upstream, redis_url, cache_dir, ttl):
    url = f"http://127.0.0.1:{port}"
    session = aiohttp.ClientSession()
    cache = BlobCache(Path(cache_dir), 1 << 30)
    await cache.open()
    fills = FillManager(cache, region=RegionLock(redis_url, ttl=float(ttl)), advertise_url=url,
                        peer_source=peer_source_factory(session))
    app = web.Application()
    add_routes(app, fills, cache)

    async def start_fill(request):
        fill = await fills.get(Digest.parse(request.match_info["digest"]),
                               lambda: HttpSource(session, upstream))
        return web.json_response({"size": await fill.size()})

    app.router.add_post("/test/fill/{digest}", start_fill)
    app.router.add_get("/test/ready", lambda r: web.Response(text="ok"))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(port)).start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_owner_killed_mid_fill_waiter_takes_over_from_upstream(
    region: tuple,
    tmp_path: Path,
    redis_server: RedisServer,  # type: ignore[type-arg]
) -> None:
    make_upstream, make_node = region
    data = os.urandom(3 * MiB)
    digest = Digest.of(data)
    upstream = await make_upstream(data)
    upstream.hold_at = 1 * MiB  # the owner's upstream GET stalls here; the owner then dies
    port = free_port()
    owner_url = f"http://127.0.0.1:{port}"
    proc = Process(
        [sys.executable, "-c", _OWNER_SCRIPT, str(port), upstream.url, redis_server.url, str(tmp_path / "owner"), "1.0"],
        cwd=REPO_ROOT, log_path=tmp_path / "owner.log", name="edge-owner",
        env={"PYTHONPATH": str(REPO_ROOT)},
    ).start()  # fmt: skip
    try:
        await asyncio.to_thread(wait_http, f"{owner_url}/test/ready", 15)
        async with aiohttp.ClientSession() as s, s.post(f"{owner_url}/test/fill/{digest}") as r:
            assert r.status == 200, await r.text()
        b = await make_node("b", upstream, ttl=1.0)
        assert await b.lock.owner(digest) == owner_url
        fill_b = await b.fill(digest)
        await eventually(lambda: fill_b.written >= 512 * KiB)  # streaming from the owner
        reader = asyncio.create_task(collect(fill_b))
        proc.kill()
        assert await asyncio.wait_for(reader, 15) == data
    finally:
        proc.kill()
    blob = await fill_b.result()
    assert blob.path.read_bytes() == data
    assert b.metrics.value("fills_remote") == 1 and b.metrics.value("lock_takeovers") == 1
    assert upstream.ranges[0] is None and len(upstream.ranges) == 2
    resumed_at = int(upstream.ranges[1].removeprefix("bytes=").rstrip("-"))  # type: ignore[union-attr]
    assert 512 * KiB <= resumed_at <= 1 * MiB
    assert await lock_released(b, digest)


async def test_owner_answering_404_with_a_lapsing_lock_is_taken_over(
    region: tuple,
    redis_server: RedisServer,  # type: ignore[type-arg]
) -> None:
    make_upstream, make_node = region
    data = os.urandom(1 * MiB)
    digest = Digest.of(data)
    upstream = await make_upstream(data)
    a = await make_node("a", upstream)
    b = await make_node("b", upstream)
    # A stale lock names A (say A restarted), which has neither the blob nor a fill of it.
    await b.lock.redis.set(b.lock.key(digest), a.url, px=600)
    fill_b = await b.fill(digest)
    assert await asyncio.wait_for(collect(fill_b), 10) == data
    assert b.metrics.value("fills_remote") == 1 and b.metrics.value("lock_takeovers") == 1
    assert upstream.ranges == [None]
    assert a.metrics.value("fills_started") == 0


async def test_owner_fill_with_wrong_bytes_fails_the_peer_too_and_nothing_is_cached(
    region: tuple,
) -> None:  # type: ignore[type-arg]
    make_upstream, make_node = region
    data = os.urandom(2 * MiB)
    digest = Digest.of(data)
    upstream = await make_upstream(data)
    upstream.corrupt = True
    upstream.hold_at = 1 * MiB
    a = await make_node("a", upstream)
    b = await make_node("b", upstream)
    fill_a = await a.fill(digest)
    await eventually(lambda: fill_a.written >= 1 * MiB)
    fill_b = await b.fill(digest)
    readers = [asyncio.create_task(collect(f)) for f in (fill_a, fill_b, fill_b)]
    await eventually(lambda: fill_b.written > 0)
    upstream.release.set()
    results = await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 10)
    assert all(isinstance(r, FillFailed) for r in results), results
    for node in (a, b):
        assert node.cache.peek(digest) is None
        assert os.listdir(node.cache.layout.incomplete) == []
        assert node.metrics.value("fills_failed", reason="digest_invalid") == 1
    assert await lock_released(a, digest)


async def test_redis_killed_mid_run_fills_fall_back_to_node_local(
    region: tuple,
    redis_server: RedisServer,  # type: ignore[type-arg]
) -> None:
    make_upstream, make_node = region
    data = os.urandom(2 * MiB)
    digest = Digest.of(data)
    upstream = await make_upstream(data)
    upstream.hold_at = 512 * KiB
    a = await make_node("a", upstream)
    b = await make_node("b", upstream)
    fill_a = await a.fill(digest)  # holds the lock
    await eventually(lambda: fill_a.written >= 512 * KiB)
    redis_server.kill()
    upstream.release.set()
    assert await asyncio.wait_for(collect(fill_a), 10) == data  # release fails quietly
    other = os.urandom(256 * KiB)
    upstream.data = other
    fill_b = await b.fill(Digest.of(other))
    assert await asyncio.wait_for(collect(fill_b), 10) == other
    assert b.metrics.value("redis_fallbacks") == 1
    assert b.cache.peek(Digest.of(other)) is not None


async def test_peer_endpoint_serves_cache_fill_or_404(region: tuple) -> None:  # type: ignore[type-arg]
    make_upstream, make_node = region
    data = os.urandom(1 * MiB)
    digest = Digest.of(data)
    upstream = await make_upstream(data)
    upstream.hold_at = 512 * KiB
    a = await make_node("a", upstream)
    url = peer_blob_url(a.url, digest)
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            assert r.status == 404 and (await r.json())["errors"][0]["code"] == "BLOB_UNKNOWN"
        async with s.get(
            peer_blob_url(a.url, Digest.of(b"x")).replace("sha256:", "sha256:zz")
        ) as r:
            assert r.status == 400
        fill = await a.fill(digest)
        await eventually(lambda: fill.written >= 512 * KiB)
        async with s.get(url, headers={"Range": "bytes=100-"}) as r:
            assert r.status == 206 and r.headers[FILL_HEADER] == "in-progress"
            assert r.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
            assert r.content_length == len(data) - 100
            head = await r.content.readexactly(1000)
            assert head == data[100:1100]
            upstream.release.set()
            assert head + await r.read() == data[100:]
        await fill.result()
        async with s.get(url, headers={"Range": "bytes=10-19"}) as r:
            assert r.status == 206 and r.headers[FILL_HEADER] == "complete"
            assert await r.read() == data[10:20]
        async with s.get(url) as r:
            assert r.status == 200 and await r.read() == data


async def test_peer_token_is_required_when_configured(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c", 1 * MiB)
    await cache.open()
    blob = await cache.put_bytes(b"hello", Digest.of(b"hello"))
    fills = FillManager(
        cache, region=None, advertise_url=None, peer_source=lambda u, d: HttpSource(None, u)
    )  # type: ignore[arg-type]
    app = web.Application()
    add_routes(app, fills, cache, token="s3cret")
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = peer_blob_url(f"http://127.0.0.1:{runner.addresses[0][1]}", blob.digest)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                assert r.status == 403
            async with s.get(url, headers={TOKEN_HEADER: "s3cret"}) as r:
                assert r.status == 200 and await r.read() == b"hello"
    finally:
        await runner.cleanup()
        await fills.close()
        await cache.close()
