"""The blob-store contract, run through the protocols of regcore.storage.interfaces over every
implementation (as aiocache runs one suite over every backend). A new backend joins
IMPLEMENTATIONS and must pass unchanged."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from regcore import errors
from regcore.digest import Digest
from regcore.storage.blobstore import FilesystemBlobStore
from regcore.storage.interfaces import BlobSink, BlobStore, LocalBlobStore, StagedBlob
from regcore.storage.layout import Layout


@dataclass(frozen=True)
class Implementation:
    """How to open a store on ``root`` (again on the same root: a restart after a crash) and
    what a dying process leaves of a sink it never committed."""

    name: str
    open: Callable[[Path], BlobStore]
    crash: Callable[[BlobSink], None]
    local: bool  # also a LocalBlobStore (files on this machine)


def _drop_descriptor(sink: BlobSink) -> None:
    cast(StagedBlob, sink).close()  # the file stays, as after a kill -9


IMPLEMENTATIONS = [
    Implementation(
        "filesystem-registry2-root",
        lambda root: FilesystemBlobStore(Layout(root)),
        _drop_descriptor,
        local=True,
    ),
    Implementation(
        "filesystem-edge-cache-dir",
        lambda root: FilesystemBlobStore(Layout(root, v2_prefix=False)),
        _drop_descriptor,
        local=True,
    ),
]
LOCAL = [impl for impl in IMPLEMENTATIONS if impl.local]


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda impl: impl.name)
def impl(request: pytest.FixtureRequest) -> Implementation:
    return cast(Implementation, request.param)


@pytest.fixture
def store(impl: Implementation, tmp_path: Path) -> BlobStore:
    return impl.open(tmp_path)


def committed(store: BlobStore) -> set[Digest]:
    return {digest for digest, _, _ in store.iter_digests()}


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_implementation_satisfies_the_protocols(impl: Implementation, store: BlobStore) -> None:
    assert isinstance(store, BlobStore)
    assert isinstance(store, LocalBlobStore) is impl.local
    sink = store.writer()
    try:
        assert isinstance(sink, BlobSink)
    finally:
        sink.discard()


async def test_commit_then_stat_read_locate(store: BlobStore) -> None:
    data = os.urandom(300_000)
    digest = await store.put_bytes(data, Digest.of(data))
    assert digest == Digest.of(data)
    assert await store.stat(digest) == len(data)
    assert await store.read_bytes(digest) == data
    blob = await store.locate(digest)
    assert blob is not None and blob.digest == digest and blob.size == len(data)
    assert blob.path.read_bytes() == data
    assert committed(store) == {digest}


async def test_streamed_writer_commit(store: BlobStore) -> None:
    parts = [os.urandom(700_000) for _ in range(3)]
    whole = b"".join(parts)
    async with store.writer() as sink:
        for part in parts:
            await sink.write(part)
        assert sink.size == len(whole)
        assert await sink.commit(Digest.of(whole), len(whole)) == Digest.of(whole)
    assert await store.read_bytes(Digest.of(whole)) == whole
    digest = await store.put_stream(chunks(b"ab", b"cd"), Digest.of(b"abcd"), 4)
    assert await store.read_bytes(digest) == b"abcd"


async def test_commit_of_an_existing_digest_is_success(store: BlobStore) -> None:
    data = os.urandom(200_000)
    first = await store.put_bytes(data, Digest.of(data))
    again = await asyncio.gather(*(store.put_bytes(data, Digest.of(data)) for _ in range(10)))
    assert set(again) == {first}
    assert committed(store) == {first}
    assert await store.read_bytes(first) == data
    assert store.recover() == 0  # no temp file left by the losers


async def test_verify_mismatch_raises_digest_invalid_and_leaves_nothing(store: BlobStore) -> None:
    wrong = Digest.of(b"other bytes")
    with pytest.raises(errors.DigestInvalid) as caught:
        await store.put_bytes(b"actual bytes", wrong)
    assert caught.value.code == "DIGEST_INVALID" and caught.value.status == 400
    sink = store.writer()
    await sink.write(b"abc")
    with pytest.raises(errors.SizeInvalid):
        await sink.commit(Digest.of(b"abc"), size=4)
    assert await store.stat(wrong) is None and await store.stat(Digest.of(b"abc")) is None
    assert committed(store) == set()
    assert store.recover() == 0


async def test_absent_blob(store: BlobStore) -> None:
    absent = Digest.of(b"never stored")
    assert await store.stat(absent) is None
    assert await store.locate(absent) is None
    with pytest.raises(errors.BlobUnknown):
        await store.read_bytes(absent)
    assert await store.delete(absent) is False


async def test_read_limit_raises_size_too_large(store: BlobStore) -> None:
    digest = await store.put_bytes(b"x" * 100)
    with pytest.raises(errors.SizeTooLarge):
        await store.read_bytes(digest, limit=10)
    assert await store.read_bytes(digest, limit=100) == b"x" * 100


async def test_delete(store: BlobStore) -> None:
    keep, gone = await store.put_bytes(b"keep"), await store.put_bytes(b"to delete")
    assert await store.delete(gone) is True
    assert await store.stat(gone) is None and await store.locate(gone) is None
    with pytest.raises(errors.BlobUnknown):
        await store.read_bytes(gone)
    assert await store.delete(gone) is False
    assert committed(store) == {keep}
    assert await store.put_bytes(b"to delete") == gone  # and it can come back
    assert await store.read_bytes(gone) == b"to delete"


async def test_install_adopts_a_verified_local_file(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    digest = Digest.of(data)
    temps = [tmp_path / "upload-a", tmp_path / "upload-b"]
    for temp in temps:
        temp.write_bytes(data)
    assert await store.install(temps[0], digest) is True
    assert await store.install(temps[1], digest) is False  # already there: success
    assert not any(temp.exists() for temp in temps)  # consumed either way
    assert await store.read_bytes(digest) == data


async def test_reopened_after_a_crash_serves_committed_and_recovers_partial(
    impl: Implementation, tmp_path: Path
) -> None:
    store = impl.open(tmp_path)
    data = os.urandom(400_000)
    digest = await store.put_bytes(data, Digest.of(data))
    partial = store.writer()
    await partial.write(os.urandom(2_000_000))
    impl.crash(partial)  # the process dies before commit

    reopened = impl.open(tmp_path)
    assert committed(reopened) == {digest}  # the partial write is no blob
    assert reopened.recover() == 1
    assert reopened.recover() == 0
    assert await reopened.read_bytes(digest) == data
    assert await reopened.stat(digest) == len(data)
    again = await reopened.put_bytes(b"after restart")
    assert committed(impl.open(tmp_path)) == {digest, again}


@pytest.mark.parametrize("impl", LOCAL, ids=lambda impl: impl.name, indirect=True)
async def test_local_detach_hides_at_once_and_open_readers_keep_reading(
    store: BlobStore,
) -> None:
    local = cast(LocalBlobStore, store)
    data = os.urandom(100_000)
    digest = await local.put_bytes(data)
    blob = local.file(digest)
    assert blob is not None and blob.path == local.path(digest) and blob.size == len(data)
    reader = os.open(blob.path, os.O_RDONLY)  # a sendfile in progress
    try:
        detached = local.detach(digest)
        assert detached is not None
        assert local.file(digest) is None and await local.stat(digest) is None
        assert local.detach(digest) is None
        again = await local.put_bytes(data)  # a new commit of the digest is not disturbed
        local.remove_detached(detached, digest)
        assert os.pread(reader, len(data) + 1, 0) == data
    finally:
        os.close(reader)
    assert not detached.exists()
    assert await local.read_bytes(again) == data


@pytest.mark.parametrize("impl", LOCAL, ids=lambda impl: impl.name, indirect=True)
async def test_local_touch_sets_the_access_time_recovery_reads(store: BlobStore) -> None:
    local = cast(LocalBlobStore, store)
    digest = await local.put_bytes(b"recency")
    old = os.stat(local.path(digest)).st_mtime
    local.touch(digest, old + 1000)
    assert [t for d, _, t in local.iter_digests() if d == digest] == [old + 1000]
    local.touch(Digest.of(b"absent"), 1.0)  # ignored
