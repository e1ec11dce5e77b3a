"""origin.uploadchunks.append_chunk: a session's data file with a pipelined writer thread.

The hash runs on the writer thread; a hasher that takes a few ms per piece stands in for a
slow disk, so the thread is still busy when the request fails: the rollback and the
client-gone paths must wait for it (the file must not change after append_chunk returned).
Everything else is real: the file, the thread, the store's installer type.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from origin.uploadchunks import IN_FLIGHT, append_chunk
from regcore import errors
from regcore.digest import Hasher
from regcore.storage.blobstore import FilesystemBlobStore
from regcore.storage.layout import Layout

PIECE = 256 * 1024


class SlowHasher(Hasher):
    """sha256 that sleeps ``delay`` seconds per update (on the writer thread)."""

    __slots__ = ()
    delay = 0.004

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        time.sleep(self.delay)
        super().update(chunk)


def _start(tmp_path: Path, prefix: bytes) -> tuple[FilesystemBlobStore, Path, SlowHasher]:
    store = FilesystemBlobStore(Layout(tmp_path / "root"))
    path = tmp_path / "data"
    path.write_bytes(prefix)
    hasher = SlowHasher("sha256")
    Hasher.update(hasher, prefix)
    return store, path, hasher


async def _pieces(data: bytes, then: BaseException | None = None) -> AsyncIterator[bytes]:
    for i in range(0, len(data), PIECE):
        yield data[i : i + PIECE]
    if then is not None:
        raise then


def _size(path: Path) -> int:
    return path.stat().st_size


async def _size_after_a_while(path: Path) -> int:
    await asyncio.sleep(0.3)
    return _size(path)


async def test_append_writes_and_hashes_every_byte(tmp_path: Path) -> None:
    prefix, data = os.urandom(100), os.urandom(3 * IN_FLIGHT + 5)
    store, path, hasher = _start(tmp_path, prefix)
    size = await append_chunk(store, path, hasher, _pieces(data), offset=len(prefix))
    assert size == len(prefix) + len(data) == path.stat().st_size == hasher.size
    assert path.read_bytes() == prefix + data
    assert hasher.digest().hex == hashlib.sha256(prefix + data).hexdigest()


async def test_refused_chunk_is_rolled_back_after_the_writer_thread_finished(
    tmp_path: Path,
) -> None:
    prefix, data = os.urandom(100), os.urandom(4 * IN_FLIGHT)
    store, path, hasher = _start(tmp_path, prefix)
    limit = len(prefix) + 2 * IN_FLIGHT  # refused with up to IN_FLIGHT bytes still queued
    with pytest.raises(errors.SizeTooLarge):
        await append_chunk(store, path, hasher, _pieces(data), offset=len(prefix), limit=limit)
    assert path.stat().st_size == len(prefix)
    assert await _size_after_a_while(path) == len(prefix)  # no write landed after the rollback
    assert path.read_bytes() == prefix


async def test_client_gone_mid_body_leaves_a_settled_hashed_prefix(tmp_path: Path) -> None:
    prefix, data = os.urandom(100), os.urandom(2 * IN_FLIGHT + 3)
    store, path, hasher = _start(tmp_path, prefix)
    with pytest.raises(ConnectionResetError):
        await append_chunk(
            store, path, hasher, _pieces(data, ConnectionResetError()), offset=len(prefix)
        )
    size = path.stat().st_size
    assert size == hasher.size == len(prefix) + len(data)  # all it received reached the file
    assert await _size_after_a_while(path) == size
    assert path.read_bytes() == prefix + data


async def test_cancelled_append_waits_for_the_writer_then_raises(tmp_path: Path) -> None:
    prefix, data = os.urandom(100), os.urandom(2 * IN_FLIGHT)
    store, path, hasher = _start(tmp_path, prefix)
    stuck = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        async for piece in _pieces(data):
            yield piece
        await stuck.wait()  # the client stops sending; the request is then cancelled
        yield b"never"

    task = asyncio.ensure_future(append_chunk(store, path, hasher, body(), offset=len(prefix)))
    for _ in range(200):  # until the body is exhausted and the thread is busy (bounded)
        await asyncio.sleep(0.005)
        if path.stat().st_size > len(prefix):
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    size = path.stat().st_size
    assert size == hasher.size
    assert await _size_after_a_while(path) == size
    assert path.read_bytes() == (prefix + data)[:size]
