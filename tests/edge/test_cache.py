"""BlobCache: the byte bound, LRU order with recency on hits, crash recovery on reopen."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edge.cache import BlobCache
from edge.fill import EdgeFillMetrics
from regcore import errors
from regcore.digest import Digest

KiB = 1024


def disk_usage(directory: Path) -> int:
    """Apparent bytes of every blob file under ``blobs/`` and ``_incomplete/``."""
    total = 0
    for sub in ("blobs", "_incomplete"):
        for root, _, files in os.walk(directory / sub):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def blobs(n: int, size: int) -> list[tuple[bytes, Digest]]:
    out = []
    for _ in range(n):
        data = os.urandom(size)
        out.append((data, Digest.of(data)))
    return out


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[BlobCache]:
    c = BlobCache(tmp_path / "cache", 100 * KiB)
    await c.open()
    yield c
    await c.close()


async def test_bound_holds_with_many_blobs_recent_survive_old_go(
    cache: BlobCache, tmp_path: Path
) -> None:
    metrics = EdgeFillMetrics(CollectorRegistry())
    metrics.bind_cache(cache)
    items = blobs(40, 10 * KiB)  # 4x the cache size
    hot_data, hot = items[0]
    for i, (data, digest) in enumerate(items):
        await cache.put_bytes(data, digest)
        assert cache.lookup(hot) is not None, f"hot blob evicted at {i}"  # refreshed every time
        assert cache.bytes_used <= cache.max_bytes
        assert disk_usage(tmp_path / "cache") <= cache.max_bytes + 10 * KiB  # unlinks in flight
    await asyncio.sleep(0.05)
    assert disk_usage(tmp_path / "cache") <= cache.max_bytes
    assert cache.entries == 10 and cache.bytes_used == 100 * KiB
    survivors = {d for _, d in items if cache.peek(d) is not None}
    assert survivors == {hot} | {d for _, d in items[-9:]}
    assert cache.lookup(hot) is not None and cache.lookup(hot).path.read_bytes() == hot_data  # type: ignore[union-attr]
    assert metrics.value("cache_evictions") == 30
    assert metrics.value("cache_evicted_bytes") == 30 * 10 * KiB
    assert metrics.value("cache_bytes") == 100 * KiB and metrics.value("cache_entries") == 10
    for _, d in items[1:31]:
        assert not cache.path_for(d).exists()


async def test_reservations_count_against_the_bound(cache: BlobCache) -> None:
    items = blobs(5, 10 * KiB)
    for data, digest in items:
        await cache.put_bytes(data, digest)
    res = await cache.reserve(80 * KiB)  # evicts the three oldest
    assert cache.bytes_used + cache.bytes_reserved <= cache.max_bytes
    assert [cache.peek(d) is not None for _, d in items] == [False, False, False, True, True]
    with pytest.raises(errors.SizeTooLarge):
        await cache.reserve(101 * KiB)
    cache.reserve_timeout = 0.2
    res2 = await cache.reserve(20 * KiB)  # evicts the rest
    assert cache.entries == 0
    with pytest.raises(errors.Unavailable):
        await cache.reserve(10 * KiB)  # all held by fills in progress
    waiter = asyncio.create_task(cache.reserve(10 * KiB))
    cache.reserve_timeout = 5
    await asyncio.sleep(0.05)
    res.release()
    res3 = await asyncio.wait_for(waiter, 1)
    for r in (res2, res3):
        r.release()
    assert cache.bytes_reserved == 0


async def test_commit_verifies_digest_and_size(cache: BlobCache) -> None:
    data = os.urandom(5 * KiB)
    digest = Digest.of(data)
    for wrong_data, wrong_size, exc in (
        (data[:-1] + bytes([data[-1] ^ 0xFF]), len(data), errors.DigestInvalid),
        (data, len(data) + 1, errors.SizeInvalid),
    ):
        res = await cache.reserve(len(data) + 1)
        writer = cache.new_writer()
        await writer.write(wrong_data)
        with pytest.raises(exc):
            await cache.commit(writer, digest, wrong_size, res)
        assert not writer.path.exists() and cache.bytes_reserved == 0 and cache.peek(digest) is None
    assert os.listdir(cache.layout.incomplete) == []


async def test_entry_whose_file_vanished_is_dropped(cache: BlobCache) -> None:
    (a, da), (b, db) = blobs(2, 4 * KiB)
    await cache.put_bytes(a, da)
    await cache.put_bytes(b, db)
    cache.path_for(da).unlink()
    assert cache.lookup(da) is None
    assert cache.entries == 1 and cache.bytes_used == 4 * KiB
    cache.path_for(db).write_bytes(b"truncated")  # a file that no longer matches its size
    assert cache.peek(db) is None and cache.entries == 0 and cache.bytes_used == 0


async def test_reopen_rebuilds_index_and_lru_order(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    items = blobs(8, 10 * KiB)
    cache = BlobCache(directory, 100 * KiB)
    await cache.open()
    for data, digest in items:
        await cache.put_bytes(data, digest)
    assert cache.lookup(items[0][1]) is not None  # oldest becomes most recent
    gone = items[1][1]
    # A crash leaves a temp file, and a blob file is lost while the index still lists it.
    (cache.layout.incomplete / "leftover").write_bytes(b"partial")
    await cache.close()
    shutil.rmtree(cache.path_for(gone).parent)

    reopened = BlobCache(directory, 100 * KiB)
    await reopened.open()
    try:
        assert os.listdir(reopened.layout.incomplete) == []
        assert reopened.entries == 7 and reopened.bytes_used == 70 * KiB
        assert reopened.peek(gone) is None
        # Fill to the bound: the LRU order from before the restart decides who goes.
        for data, digest in blobs(5, 10 * KiB):
            await reopened.put_bytes(data, digest)
        alive = [reopened.peek(d) is not None for _, d in items]
        assert alive == [True, False, False, False, True, True, True, True]
    finally:
        await reopened.close()


async def test_lost_index_is_rebuilt_from_files_with_their_access_times(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    items = blobs(4, 10 * KiB)
    cache = BlobCache(directory, 40 * KiB, flush_interval=0.01)
    await cache.open()
    for data, digest in items:
        await cache.put_bytes(data, digest)
    await asyncio.sleep(0.02)
    assert cache.lookup(items[0][1]) is not None  # recency written to the file's atime too
    await cache.close()
    shutil.rmtree(directory / "index")
    # A blob dropped in by hand (no index entry) is adopted as well.
    extra = os.urandom(5 * KiB)
    path = cache.path_for(Digest.of(extra))
    path.parent.mkdir(parents=True)
    path.write_bytes(extra)
    os.utime(path, (1, 1))  # very old

    reopened = BlobCache(directory, 45 * KiB)
    await reopened.open()
    try:
        assert reopened.entries == 5 and reopened.bytes_used == 45 * KiB
        await reopened.put_bytes(
            *blobs(1, 15 * KiB)[0]
        )  # evicts the hand-placed blob, then items[1]
        assert reopened.peek(Digest.of(extra)) is None
        assert [reopened.peek(d) is not None for _, d in items] == [True, False, True, True]
    finally:
        await reopened.close()


async def test_reopen_with_a_smaller_bound_evicts_down_to_it(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    cache = BlobCache(directory, 100 * KiB)
    await cache.open()
    for data, digest in blobs(10, 10 * KiB):
        await cache.put_bytes(data, digest)
    await cache.close()
    smaller = BlobCache(directory, 35 * KiB)
    await smaller.open()
    try:
        assert smaller.bytes_used == 30 * KiB and smaller.entries == 3
    finally:
        await smaller.close()
    await asyncio.sleep(0)
    assert disk_usage(directory) == 30 * KiB
