"""The fill's fast path: the pipelined writer thread.

- :meth:`BlobWriter.pipeline` (the fill's writer): bytes land in order, hashed, progress is
  reported on the loop, write-ahead stays bounded, a discard mid-stream leaks nothing.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from regcore.digest import Digest
from regcore.storage.blobstore import FilesystemBlobStore
from regcore.storage.layout import Layout

KiB = 1024
MiB = 1024 * KiB


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` (bounded) until true; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- the pipelined BlobWriter -----------------------------------------------------------------


async def test_pipelined_writer_lands_every_byte_in_order_with_bounded_write_ahead(
    tmp_path: Path,
) -> None:
    store = FilesystemBlobStore(Layout(tmp_path))
    rng = random.Random(7)
    chunks = [os.urandom(rng.randint(1, 40 * KiB)) for _ in range(300)]
    data = b"".join(chunks)
    progress: list[int] = []
    limit = 256 * KiB
    w = store.writer()
    w.pipeline(max_in_flight=limit, on_written=progress.append, sync_every=512 * KiB)
    accepted = 0
    for chunk in chunks:
        await w.write(chunk)
        accepted += len(chunk)
        assert w.size == accepted
        assert w.size - w.written <= limit  # write-ahead bounded
    await w.flush()
    assert w.written == w.size == len(data)
    assert progress == sorted(set(progress)) and progress[-1] == len(data)
    assert 1 < len(progress) < len(chunks)  # batched, but not all at once
    assert w.path.read_bytes() == data
    digest = await w.commit(Digest.of(data), len(data))
    assert digest == Digest.of(data)
    assert store.path(digest).read_bytes() == data


async def test_pipelined_writer_refuses_wrong_bytes_and_discard_mid_stream_leaks_nothing(
    tmp_path: Path,
) -> None:
    store = FilesystemBlobStore(Layout(tmp_path))
    data = os.urandom(3 * MiB)
    before = open_fds()
    w = store.writer()
    w.pipeline(max_in_flight=8 * MiB, sync_every=256 * KiB)  # a background sync fd as well
    for at in range(0, len(data), 64 * KiB):
        await w.write(data[at : at + 64 * KiB])
    w.discard()  # batches may still be on the writer thread
    assert not w.path.exists()
    with pytest.raises(ValueError):
        await w.write(b"more")
    await eventually(lambda: open_fds() == before)

    w = store.writer()
    w.pipeline()
    await w.write(data)
    with pytest.raises(Exception, match="digest"):
        await w.commit(Digest.of(b"other bytes"), len(data))
    assert not w.path.exists() and list(store.iter_digests()) == []
    await eventually(lambda: open_fds() == before)
