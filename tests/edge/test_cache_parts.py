"""The blob cache's parts on their own: recovery's reconcile, the LRU's eviction order and
``keep``, the space budget's waiting. BlobCache as a whole is tested in test_cache.py."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from edge.cachelru import CacheLru, Entry
from edge.cacherecovery import reconcile
from edge.cachespace import CacheSpace
from regcore import errors
from regcore.digest import Digest
from regcore.storage.blobstore import FilesystemBlobStore
from regcore.storage.layout import Layout


def test_reconcile_files_are_the_truth_and_index_keeps_recency() -> None:
    a, b, c, gone = (Digest.of(x) for x in (b"a", b"b", b"c", b"gone"))
    files = [(a, 10, 500.0), (b, 20, 100.0), (c, 30, 300.0)]
    persisted = {str(a): (10, 50.0), str(b): (99, 900.0), str(gone): (5, 1.0), "junk": (1, 1.0)}
    found = reconcile(files, persisted)
    # a: index recency (50); b: index recency (900) but its size taken from the file; c: the
    # file's time (300).
    assert [(d, e.size, e.atime) for d, e in found.entries] == [
        (a, 10, 50.0),
        (c, 30, 300.0),
        (b, 20, 900.0),
    ]
    assert set(found.changes) == {b, c, gone}  # a is already right; junk is no digest
    assert found.changes[gone] is None
    assert found.changes[b] == Entry(20, 900.0) and found.changes[c] == Entry(30, 300.0)


async def test_lru_evicts_oldest_first_never_the_kept_one(tmp_path: Path) -> None:
    store = FilesystemBlobStore(Layout(tmp_path, v2_prefix=False))
    recorded: list[tuple[Digest, Entry | None]] = []
    evicted: list[tuple[Digest, int]] = []
    freed: list[None] = []
    lru = CacheLru(
        store, record=lambda d, e: recorded.append((d, e)), on_freed=lambda: freed.append(None)
    )
    lru.add_listener(lambda d, size: evicted.append((d, size)))
    lru.add_listener(lambda d, size: 1 / 0)  # a failing listener does not stop eviction
    digests = []
    for i in range(4):
        data = os.urandom(100 + i)
        digests.append(await store.put_bytes(data))
        lru.add(digests[-1], len(data))
    lru.touch(digests[0])  # now the most recent
    assert lru.bytes_used == 406 and len(lru) == 4
    lru.shrink_to(205, keep=digests[1])  # the oldest is digests[1], but it is kept
    await lru.settle()
    assert evicted == [(digests[2], 102), (digests[3], 103)]
    assert lru.bytes_used == 201 and len(freed) == 2
    assert [d for d, e in recorded if e is None] == [digests[2], digests[3]]
    assert store.file(digests[2]) is None and store.file(digests[3]) is None
    assert store.recover() == 0  # detached files were unlinked, not left in the temp area
    lru.shrink_to(0, keep=digests[0])
    assert len(lru) == 1 and lru.get(digests[0]) is not None


async def test_space_wait_wakes_on_release_and_refuses_past_the_deadline() -> None:
    space = CacheSpace(100)
    with pytest.raises(errors.SizeTooLarge):
        space.check(101)
    with pytest.raises(errors.SizeInvalid):
        space.check(-1)
    held = space.hold(100)
    loop = asyncio.get_running_loop()
    waiter = asyncio.create_task(space.wait(loop.time() + 5))
    await asyncio.sleep(0.01)
    held.release()
    held.release()  # idempotent
    await asyncio.wait_for(waiter, 1)
    assert space.reserved == 0
    with pytest.raises(errors.Unavailable):
        await space.wait(loop.time())
