"""The filesystem blob store: verified atomic commit, idempotency, crash recovery."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest

from regcore import errors
from regcore.digest import Digest
from regcore.storage.blobstore import FilesystemBlobStore
from regcore.storage.layout import Layout


@pytest.fixture
def store(tmp_path):
    return FilesystemBlobStore(Layout(tmp_path))


def _blob_files(store: FilesystemBlobStore) -> list[str]:
    return sorted(str(d) for d, _, _ in store.iter_digests())


async def test_put_bytes_lands_in_registry2_layout(store, tmp_path):
    data = b"hello quayside"
    dg = await store.put_bytes(data)
    assert dg == Digest.of(data)
    expected = tmp_path / "docker/registry/v2/blobs/sha256" / dg.hex[:2] / dg.hex / "data"
    assert expected.read_bytes() == data
    assert await store.stat(dg) == len(data)


async def test_wrong_digest_is_refused_and_leaves_nothing(store):
    wrong = Digest.of(b"something else")
    with pytest.raises(errors.DigestInvalid):
        await store.put_bytes(b"actual bytes", wrong)
    assert _blob_files(store) == []
    assert list(store.layout.incomplete.iterdir()) == []


async def test_wrong_size_is_refused(store):
    w = store.writer()
    await w.write(b"abc")
    with pytest.raises(errors.SizeInvalid):
        await w.commit(Digest.of(b"abc"), size=4)
    assert _blob_files(store) == []
    assert not w.path.exists()


async def test_commit_of_existing_digest_is_success_and_keeps_one_copy(store):
    data = os.urandom(300_000)
    results = await asyncio.gather(*(store.put_bytes(data) for _ in range(20)))
    assert len(set(results)) == 1
    assert _blob_files(store) == [str(Digest.of(data))]
    assert store.path(results[0]).read_bytes() == data
    assert list(store.layout.incomplete.iterdir()) == []


async def test_large_streamed_write_hashes_incrementally(store):
    chunks = [os.urandom(700_000) for _ in range(5)]

    async def gen():
        for c in chunks:
            yield c

    dg = await store.put_stream(gen(), Digest.of(b"".join(chunks)), size=3_500_000)
    assert store.path(dg).read_bytes() == b"".join(chunks)


async def test_crash_leaves_only_temp_files_which_recovery_removes(tmp_path):
    store = FilesystemBlobStore(Layout(tmp_path))
    w = store.writer()
    await w.write(b"x" * 2_000_000)
    await w.flush()
    # "crash": the process dies here; the writer is never committed.
    w.close()
    assert w.path.exists()
    reopened = FilesystemBlobStore(Layout(tmp_path))
    assert _blob_files(reopened) == []
    assert reopened.recover() == 1
    assert list(reopened.layout.incomplete.iterdir()) == []


async def test_reopened_store_serves_committed_blobs(tmp_path):
    data = b"persisted"
    dg = await FilesystemBlobStore(Layout(tmp_path)).put_bytes(data)
    reopened = FilesystemBlobStore(Layout(tmp_path))
    assert await reopened.read_bytes(dg) == data


async def test_read_unknown_blob_is_blob_unknown(store):
    with pytest.raises(errors.BlobUnknown):
        await store.read_bytes(Digest.of(b"nope"))


async def test_read_bytes_limit(store):
    dg = await store.put_bytes(b"x" * 100)
    with pytest.raises(errors.SizeTooLarge):
        await store.read_bytes(dg, limit=10)


async def test_delete(store):
    dg = await store.put_bytes(b"to delete")
    assert await store.delete(dg) is True
    assert await store.stat(dg) is None
    assert await store.delete(dg) is False


def _stage_on_another_filesystem(data: bytes, here: Path) -> Path | None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(here).st_dev:
        return None
    with tempfile.NamedTemporaryFile(dir=shm, delete=False) as f:
        f.write(data)
    return Path(f.name)


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


async def test_install_from_another_filesystem_copies_then_consumes_the_file(tmp_path):
    data = os.urandom(100_000)
    staged = _stage_on_another_filesystem(data, tmp_path)
    if staged is None:
        pytest.skip("needs /dev/shm on another filesystem than the test's tmp_path")
    store = FilesystemBlobStore(Layout(tmp_path))
    try:
        installed = await store.install(staged, Digest.of(data))
    finally:
        left_behind = _remove(staged)
    assert installed is True and not left_behind
    assert await store.read_bytes(Digest.of(data)) == data
    assert list(store.layout.incomplete.iterdir()) == []


def test_layout_refuses_paths_outside_root(tmp_path):
    layout = Layout(tmp_path)
    with pytest.raises(errors.NameInvalid):
        layout.repo_dir("../../etc")
    with pytest.raises(errors.NameInvalid):
        layout.tag_dir("a", "../../../x")
    assert layout.repo_dir("a/b/c").is_relative_to(layout.repositories)
