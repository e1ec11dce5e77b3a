"""Content-addressed blob store on a local filesystem: :class:`FilesystemBlobStore`.

It implements every protocol of :mod:`regcore.storage.interfaces` (:class:`BlobStore` for the
origin, :class:`LocalBlobStore` for the edge's cache); paths come from
:class:`~regcore.storage.layout.Layout`, the only module that knows the tree.

Guarantees:
- A blob path returned by :meth:`FilesystemBlobStore.path` either does not exist or holds the
  complete, verified bytes of that digest: bytes are written to a uniquely named temp file,
  hashed while written, checked against the expected digest (and size), fsynced, moved into
  place with ``os.replace`` and the directory fsynced. A crash at any point leaves at most a
  temp file under ``_incomplete/`` (or an upload's ``data``), never a partial blob.
- Committing a digest that already exists is success (equal names mean equal bytes): the
  temp file is dropped and the existing file kept. Concurrent commits of one digest are safe.
- :meth:`~FilesystemBlobStore.recover` (run at start-up) removes leftover temp files.
- Eviction is two steps: :meth:`~FilesystemBlobStore.detach` renames the file out of the blob
  tree at once, :meth:`~FilesystemBlobStore.remove_detached` unlinks it later in a thread.

Blocking work (writes of large buffers, fsync, directory walks) runs in worker threads; the
writer itself is :class:`regcore.storage.blobwriter.BlobWriter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
from collections.abc import AsyncIterable, Iterator
from pathlib import Path

from regcore import errors
from regcore.digest import Digest
from regcore.storage.blobwriter import DEFAULT_FLUSH_BYTES, BlobWriter
from regcore.storage.interfaces import BlobFile, BlobStore
from regcore.storage.layout import Layout

# BlobWriter and BlobStore are re-exported for the callers that import them from here.
__all__ = [
    "DEFAULT_FLUSH_BYTES",
    "BlobStore",
    "BlobWriter",
    "FilesystemBlobStore",
    "fsync_path",
]


class FilesystemBlobStore:
    """Blobs under ``layout.blobs``; temp files under ``layout.incomplete``.

    Safe for concurrent use by the tasks of one event loop (and its worker threads)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        layout.ensure()

    # -- reading ---------------------------------------------------------------------------
    def path(self, digest: Digest) -> Path:
        """Where the blob's file is, whether or not it exists now. No I/O."""
        return self.layout.blob_data(digest)

    def file(self, digest: Digest) -> BlobFile | None:
        """The committed blob and its size (one stat), or None when absent."""
        path = self.path(digest)
        try:
            return BlobFile(digest, path, os.stat(path).st_size)
        except (FileNotFoundError, NotADirectoryError):
            return None

    async def locate(self, digest: Digest) -> BlobFile | None:
        return self.file(digest)

    async def stat(self, digest: Digest) -> int | None:
        blob = self.file(digest)
        return blob.size if blob is not None else None

    async def read_bytes(self, digest: Digest, limit: int | None = None) -> bytes:
        """Whole blob into memory (manifests). Raises BlobUnknown / SizeTooLarge."""
        p = self.path(digest)
        try:
            size = os.stat(p).st_size
            if limit is not None and size > limit:
                raise errors.SizeTooLarge(f"{size} > {limit}")
            return await asyncio.to_thread(p.read_bytes)
        except (FileNotFoundError, NotADirectoryError):
            raise errors.BlobUnknown(str(digest)) from None

    # -- writing ---------------------------------------------------------------------------
    def temp_path(self) -> Path:
        return self.layout.temp_file()

    def writer(
        self, algorithm: str = "sha256", *, flush_bytes: int = DEFAULT_FLUSH_BYTES
    ) -> BlobWriter:
        """A :class:`BlobWriter` on a fresh temp file; its commit installs here."""
        return BlobWriter(self, self.temp_path(), algorithm=algorithm, flush_bytes=flush_bytes)

    async def install(self, temp: Path, digest: Digest) -> bool:
        """Move a verified, fsynced file into place (from another filesystem: copy, fsync,
        move); ``temp`` is consumed. Returns False if the blob already existed."""
        return await asyncio.to_thread(self._install, temp, digest)

    def _install(self, temp: Path, digest: Digest) -> bool:
        final = self.path(digest)
        if final.exists():
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(temp, final)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            self._copy_in(temp, final)  # an upload staged on another filesystem
        fsync_path(final.parent)
        return True

    def _copy_in(self, source: Path, final: Path) -> None:
        """Copy ``source`` to a temp file of ours, fsync, move into place, drop ``source``."""
        temp = self.temp_path()
        try:
            shutil.copyfile(source, temp)
            fsync_path(temp)
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        source.unlink()

    async def put_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        w = self.writer(expected.algorithm if expected else "sha256")
        try:
            await w.write(data)
            return await w.commit(expected, len(data))
        except BaseException:
            w.discard()
            raise

    async def put_stream(
        self, chunks: AsyncIterable[bytes], expected: Digest | None = None, size: int | None = None
    ) -> Digest:
        w = self.writer(expected.algorithm if expected else "sha256")
        try:
            async for chunk in chunks:
                await w.write(chunk)
            return await w.commit(expected, size)
        except BaseException:
            w.discard()
            raise

    # -- removing ----------------------------------------------------------------------------
    async def delete(self, digest: Digest) -> bool:
        return await asyncio.to_thread(self._delete, digest)

    def _delete(self, digest: Digest) -> bool:
        path = self.path(digest)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return False
        with contextlib.suppress(OSError):
            path.parent.rmdir()
        return True

    def detach(self, digest: Digest) -> Path | None:
        """Rename the blob's file to a temp name at once (see LocalBlobFiles.detach)."""
        doomed = self.layout.temp_file("evicted-")
        try:
            os.rename(self.path(digest), doomed)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return doomed

    def remove_detached(self, detached: Path, digest: Digest) -> None:
        """Unlink a detached file, prune the blob's directory if empty. Blocking."""
        with contextlib.suppress(FileNotFoundError):
            detached.unlink()
        with contextlib.suppress(OSError):
            self.path(digest).parent.rmdir()

    def touch(self, digest: Digest, atime: float) -> None:
        """Set the blob file's atime (its mtime kept); a missing file is ignored."""
        path = self.path(digest)
        with contextlib.suppress(OSError):
            os.utime(path, (atime, os.stat(path).st_mtime))

    # -- maintenance ---------------------------------------------------------------------------

    def iter_digests(self) -> Iterator[tuple[Digest, int, float]]:
        """Walk committed blobs: (digest, size, atime-or-mtime). Blocking; call in a thread."""
        for dg, data in self.layout.blob_files():
            try:
                st = data.stat()
            except OSError:
                continue
            yield dg, st.st_size, max(st.st_atime, st.st_mtime)

    def recover(self) -> int:
        """Remove temp files left by a crash. Blocking. Returns how many were removed."""
        removed = 0
        for p in self.layout.temp_files():
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
        return removed


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a regular file or a directory: its entries) to disk. Blocking: call it
    through ``asyncio.to_thread`` from a loop. Raises OSError (FileNotFoundError...)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
