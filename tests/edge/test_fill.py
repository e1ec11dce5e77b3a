"""Single-flight fills on one node: shared readers, Range on a cold miss, integrity, ownership.

Sources here are in-process (the unit under test is the fill), plus one real aiohttp "fault
upstream" read through HttpSource for a connection cut mid-blob.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from edge.cache import BlobCache
from edge.fill import EdgeFillMetrics, Fill, FillFailed, FillManager
from edge.sources import BlobSource, HttpSource, UpstreamSource
from harness.oci_http import push_blob
from harness.registry import DockerRegistry
from regcore import errors
from regcore.client import RegistryClient
from regcore.digest import Digest

KiB = 1024
MiB = 1024 * KiB


def blob_bytes(size: int) -> bytes:
    return os.urandom(size)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` (bounded) until true; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


class ScriptedSource:
    """In-process source: serves ``data`` in chunks; optional gate, corruption, truncation."""

    description = "upstream"

    def __init__(
        self,
        data: bytes,
        *,
        chunk: int = 64 * KiB,
        gate_after: int | None = None,
        corrupt: bool = False,
        short_by: int = 0,
        delay: float = 0.0,
    ) -> None:
        self.data = data
        self.chunk = chunk
        self.gate_after = gate_after  # block after this many bytes until ``gate`` is set
        self.gate = asyncio.Event()
        self.corrupt = corrupt
        self.short_by = short_by
        self.delay = delay
        self.opens: list[int] = []
        self.finished = asyncio.Event()

    async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]:
        self.opens.append(offset)
        return len(self.data), self._chunks(offset)

    async def _chunks(self, offset: int) -> AsyncIterator[bytes]:
        body = bytearray(self.data)
        if self.corrupt:
            body[len(body) // 2] ^= 0xFF
        end = len(body) - self.short_by
        pos = offset
        while pos < end:
            if self.gate_after is not None and pos >= self.gate_after:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            n = min(self.chunk, end - pos)
            yield bytes(body[pos : pos + n])
            pos += n
        self.finished.set()


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[BlobCache]:
    c = BlobCache(tmp_path / "cache", 64 * MiB)
    await c.open()
    yield c
    await c.close()


@pytest.fixture
async def manager(cache: BlobCache) -> AsyncIterator[tuple[FillManager, EdgeFillMetrics]]:
    metrics = EdgeFillMetrics(CollectorRegistry())

    def no_peers(url: str, digest: Digest) -> BlobSource:
        raise AssertionError("no region configured")

    fm = FillManager(
        cache,
        region=None,
        advertise_url=None,
        peer_source=no_peers,
        metrics=metrics,
        drain_timeout=5,
    )
    await fm.start()
    yield fm, metrics
    await fm.close()


async def collect(fill: Fill, start: int = 0, end: int | None = None) -> bytes:
    out = bytearray()
    async for chunk in fill.read(start, end):
        out += chunk
    return bytes(out)


def incomplete_files(cache: BlobCache) -> list[str]:
    return os.listdir(cache.layout.incomplete)


def factory(source: BlobSource) -> Callable[[], BlobSource]:
    return lambda: source


async def test_twenty_readers_share_one_source_and_get_first_bytes_before_the_end(
    cache: BlobCache, manager: tuple[FillManager, EdgeFillMetrics]
) -> None:
    fm, metrics = manager
    data = blob_bytes(3 * MiB)
    digest = Digest.of(data)
    source = ScriptedSource(data, gate_after=1 * MiB)  # blocks at 1 MiB until released
    fills = [await fm.get(digest, factory(source)) for _ in range(20)]
    assert all(f is fills[0] for f in fills)

    first_chunks: list[bytes] = []

    async def reader(fill: Fill) -> bytes:
        out = bytearray()
        async for chunk in fill.read():
            if not out:
                first_chunks.append(chunk)
            out += chunk
        return bytes(out)

    tasks = [asyncio.create_task(reader(f)) for f in fills]
    # Every reader receives its first bytes while the source is still blocked.
    await eventually(lambda: len(first_chunks) == 20)
    assert not source.gate.is_set() and not fills[0].finished
    assert all(c == data[: len(c)] for c in first_chunks)
    source.gate.set()
    results = await asyncio.gather(*tasks)
    assert all(r == data for r in results)
    assert source.opens == [0]
    blob = await fills[0].result()
    assert blob.path.read_bytes() == data
    assert cache.lookup(digest) is not None
    assert metrics.value("fills_started") == 1
    assert metrics.value("fills_joined") == 19
    assert metrics.value("fill_bytes", source="upstream") == len(data)
    assert incomplete_files(cache) == []


async def test_late_reader_gets_everything_already_written_then_follows(
    manager: tuple[FillManager, EdgeFillMetrics],
) -> None:
    fm, _ = manager
    data = blob_bytes(1 * MiB + 7)
    source = ScriptedSource(data, gate_after=512 * KiB)
    fill = await fm.get(Digest.of(data), factory(source))
    await eventually(lambda: fill.written >= 512 * KiB)
    late = asyncio.create_task(collect(fill))
    await asyncio.sleep(0.05)
    source.gate.set()
    assert await late == data


async def test_range_on_a_cold_fill_waits_for_those_bytes(
    manager: tuple[FillManager, EdgeFillMetrics],
) -> None:
    fm, _ = manager
    data = blob_bytes(2 * MiB)
    source = ScriptedSource(data, chunk=16 * KiB, delay=0.001)
    fill = await fm.get(Digest.of(data), factory(source))
    start, end = 1 * MiB + 3, 1 * MiB + 200 * KiB
    assert await collect(fill, start, end) == data[start : end + 1]
    tail = await collect(fill, 2 * MiB - 10)
    assert tail == data[-10:]
    with pytest.raises(errors.RangeInvalid):
        await collect(fill, 2 * MiB)


@pytest.mark.parametrize("fault", ["corrupt", "short"])
async def test_bad_source_fails_every_reader_and_caches_nothing(
    cache: BlobCache, manager: tuple[FillManager, EdgeFillMetrics], fault: str
) -> None:
    fm, metrics = manager
    data = blob_bytes(1 * MiB)
    digest = Digest.of(data)
    source = ScriptedSource(
        data, corrupt=fault == "corrupt", short_by=1000 if fault == "short" else 0
    )
    fill = await fm.get(digest, factory(source))
    readers = [asyncio.create_task(collect(fill)) for _ in range(5)]
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(r, FillFailed) for r in results), results
    with pytest.raises(FillFailed):
        await fill.result()
    assert cache.lookup(digest) is None
    assert not cache.path_for(digest).exists()
    assert incomplete_files(cache) == []
    assert cache.bytes_reserved == 0
    assert fm.active(digest) is None
    reason = "digest_invalid" if fault == "corrupt" else "short"
    assert metrics.value("fills_failed", reason=reason) == 1
    if fault == "short":
        assert source.opens == [0, len(data) - 1000]  # resumed once at its offset, then gave up


async def test_reader_cancellation_does_not_stop_the_fill(
    cache: BlobCache, manager: tuple[FillManager, EdgeFillMetrics]
) -> None:
    fm, _ = manager
    data = blob_bytes(2 * MiB)
    digest = Digest.of(data)
    source = ScriptedSource(data, gate_after=256 * KiB)
    fill = await fm.get(digest, factory(source))
    got_first = asyncio.Event()

    async def reader() -> None:
        async for _ in fill.read():
            got_first.set()

    task = asyncio.create_task(reader())
    await asyncio.wait_for(got_first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    source.gate.set()
    blob = await asyncio.wait_for(fill.result(), 5)
    assert blob.path.read_bytes() == data
    assert cache.lookup(digest) == blob
    again = await fm.get(digest, factory(source))
    assert again.finished and await collect(again) == data
    assert source.opens == [0]


async def test_source_404_reaches_waiters_as_that_oci_error(
    manager: tuple[FillManager, EdgeFillMetrics],
) -> None:
    fm, _ = manager

    class Missing:
        description = "upstream"

        async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]:
            raise errors.BlobUnknown("nope")

    fill = await fm.get(Digest.of(b"missing"), Missing)
    with pytest.raises(errors.BlobUnknown):
        await fill.size()
    with pytest.raises(errors.BlobUnknown):
        await collect(fill)


async def test_upstream_connection_cut_mid_blob_is_resumed_by_range(cache: BlobCache) -> None:
    data = blob_bytes(1 * MiB)
    digest = Digest.of(data)
    seen_ranges: list[str | None] = []

    async def blob(request: web.Request) -> web.StreamResponse:
        rng = request.headers.get("Range")
        seen_ranges.append(rng)
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        resp = web.StreamResponse(status=206 if rng else 200)
        resp.content_length = len(data) - start
        if rng:
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        await resp.prepare(request)
        if rng is None:  # first response: cut after 300 KiB
            await resp.write(data[: 300 * KiB])
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.abort()
            return resp
        await resp.write(data[start:])
        return resp

    app = web.Application()
    app.router.add_get("/blob", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            fm = FillManager(
                cache,
                region=None,
                advertise_url=None,
                peer_source=lambda u, d: HttpSource(session, u),
            )
            fill = await fm.get(
                digest, lambda: HttpSource(session, f"http://127.0.0.1:{port}/blob")
            )
            assert await collect(fill) == data
            await fm.close()
    finally:
        await runner.cleanup()
    assert seen_ranges[0] is None and seen_ranges[1] is not None
    assert seen_ranges[1] == f"bytes={300 * KiB}-"
    assert cache.lookup(digest) is not None


async def test_close_drains_running_fills(cache: BlobCache) -> None:
    data = blob_bytes(512 * KiB)
    source = ScriptedSource(data, chunk=32 * KiB, delay=0.01)
    fm = FillManager(
        cache, region=None, advertise_url=None, peer_source=lambda u, d: source, drain_timeout=5
    )
    fill = await fm.get(Digest.of(data), factory(source))
    await fm.close()
    assert (await fill.result()).size == len(data)
    with pytest.raises(errors.Unavailable):
        await fm.get(Digest.of(b"other"), factory(source))


async def test_close_cancels_fills_past_the_deadline(cache: BlobCache) -> None:
    data = blob_bytes(512 * KiB)
    source = ScriptedSource(data, gate_after=64 * KiB)  # never released
    fm = FillManager(
        cache, region=None, advertise_url=None, peer_source=lambda u, d: source, drain_timeout=0.2
    )
    fill = await fm.get(Digest.of(data), factory(source))
    await fill.size()
    await fm.close()
    with pytest.raises(FillFailed):
        await fill.result()
    assert incomplete_files(cache) == [] and cache.bytes_reserved == 0


async def test_upstream_source_fills_from_a_real_registry(
    cache: BlobCache, docker_registry: DockerRegistry
) -> None:
    data = blob_bytes(900 * KiB + 11)  # harness push_blob sends raw bytes: keep under 1 MiB
    async with aiohttp.ClientSession() as session:
        digest = Digest.parse(await push_blob(session, docker_registry.url, "team/app", data))
        async with RegistryClient(docker_registry.url, session=session) as client:
            fm = FillManager(
                cache,
                region=None,
                advertise_url=None,
                peer_source=lambda u, d: HttpSource(session, u),
            )
            fill = await fm.get(digest, lambda: UpstreamSource(client, "team/app", digest))
            assert await collect(fill, 1000, 2000) == data[1000:2001]
            assert await collect(fill) == data
            missing = Digest.of(b"not pushed")
            gone = await fm.get(missing, lambda: UpstreamSource(client, "team/app", missing))
            with pytest.raises(errors.BlobUnknown):
                await gone.size()
            await fm.close()
    assert cache.lookup(digest) is not None


def disk_bytes(cache: BlobCache) -> int:
    total = 0
    for sub in (cache.layout.blobs, cache.layout.incomplete):
        for root, _, files in os.walk(sub):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


async def test_cache_bound_holds_while_fills_run(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "small", 3 * MiB)
    await cache.open()
    fm = FillManager(
        cache, region=None, advertise_url=None, peer_source=lambda u, d: HttpSource(None, u)
    )  # type: ignore[arg-type]
    try:
        old = [os.urandom(512 * KiB) for _ in range(4)]
        for data in old:
            await cache.put_bytes(data, Digest.of(data))
        sources = [ScriptedSource(blob_bytes(1 * MiB), gate_after=512 * KiB) for _ in range(2)]
        fills = [await fm.get(Digest.of(s.data), factory(s)) for s in sources]
        await eventually(lambda: all(f.written >= 512 * KiB for f in fills))
        # 2 MiB reserved for the fills: two old blobs went, the bound holds on disk as well.
        assert cache.bytes_reserved == 2 * MiB and cache.bytes_used == 1 * MiB
        await asyncio.sleep(0.05)
        assert disk_bytes(cache) <= cache.max_bytes
        assert [cache.peek(Digest.of(d)) is not None for d in old] == [False, False, True, True]
        for s in sources:
            s.gate.set()
        for f, s in zip(fills, sources, strict=True):
            assert (await f.result()).path.read_bytes() == s.data
        assert cache.bytes_reserved == 0 and cache.bytes_used == 3 * MiB
        assert disk_bytes(cache) <= cache.max_bytes
    finally:
        await fm.close()
        await cache.close()


async def test_reader_finishes_a_blob_evicted_under_it(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "small", 1 * MiB)
    await cache.open()
    fm = FillManager(
        cache, region=None, advertise_url=None, peer_source=lambda u, d: HttpSource(None, u)
    )  # type: ignore[arg-type]
    try:
        data = blob_bytes(1 * MiB)
        digest = Digest.of(data)
        fill = await fm.get(digest, factory(ScriptedSource(data)))
        await fill.result()
        reader = fill.read()
        first = await anext(reader)
        other = os.urandom(600 * KiB)
        await cache.put_bytes(other, Digest.of(other))  # evicts the blob being read
        assert cache.peek(digest) is None and not cache.path_for(digest).exists()
        rest = b"".join([chunk async for chunk in reader])
        assert first + rest == data
        again = await fm.get(digest, factory(ScriptedSource(data)))  # a miss again: refilled
        assert not again.finished and await collect(again) == data
    finally:
        await fm.close()
        await cache.close()


async def test_empty_blob_fills_and_reads(
    cache: BlobCache, manager: tuple[FillManager, EdgeFillMetrics]
) -> None:
    fm, _ = manager
    fill = await fm.get(Digest.of(b""), factory(ScriptedSource(b"")))
    assert await fill.size() == 0 and await collect(fill) == b""
    assert (await fill.result()).size == 0 and cache.peek(Digest.of(b"")) is not None
