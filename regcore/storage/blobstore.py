"""Content-addressed blob store on a local filesystem.

Guarantees:
- A blob path returned by :meth:`FilesystemBlobStore.path` either does not exist or holds the
  complete, verified bytes of that digest: bytes are written to a uniquely named temp file,
  hashed while written, checked against the expected digest (and size), fsynced, moved into
  place with ``os.replace`` and the directory fsynced. A crash at any point leaves at most a
  temp file under ``_incomplete/`` (or an upload's ``data``), never a partial blob.
- Committing a digest that already exists is success (equal names mean equal bytes): the
  temp file is dropped and the existing file kept. Concurrent commits of one digest are safe.
- :meth:`recover` (run at start-up) removes leftover temp files.

Blocking work (writes of large buffers, fsync, directory walks) runs in worker threads. A
:meth:`BlobWriter.pipeline` writer writes and hashes on its own thread while the event loop goes
on receiving (the edge's fills).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterable, Callable, Iterator
from pathlib import Path
from typing import Protocol

from regcore import errors
from regcore.digest import Digest, Hasher
from regcore.storage.layout import Layout
from regcore.storage.writepipeline import IN_FLIGHT, SYNC_EVERY, WritePipeline

DEFAULT_FLUSH_BYTES = 1 << 20


class BlobStore(Protocol):
    """What servers need from a blob store."""

    def path(self, digest: Digest) -> Path: ...
    async def stat(self, digest: Digest) -> int | None: ...
    def writer(self, algorithm: str = "sha256") -> BlobWriter: ...
    async def put_bytes(self, data: bytes, expected: Digest | None = None) -> Digest: ...
    async def read_bytes(self, digest: Digest, limit: int | None = None) -> bytes: ...
    async def delete(self, digest: Digest) -> bool: ...


class BlobWriter:
    """Append-only temp file with a running hash.

    ``write`` buffers up to ``flush_bytes`` and writes+hashes larger batches in a thread,
    so the event loop stays free; after :meth:`pipeline`, one dedicated thread writes and
    hashes while the caller goes on. Not safe for concurrent use by several tasks.
    ``offset`` and ``hasher`` allow resuming an existing file (uploads).
    """

    def __init__(
        self,
        store: FilesystemBlobStore,
        path: Path,
        *,
        algorithm: str = "sha256",
        hasher: Hasher | None = None,
        append: bool = False,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
    ) -> None:
        self.store = store
        self.path = path
        self.hasher = hasher or Hasher(algorithm)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o644
        )
        self._buf = bytearray()
        self._flush_bytes = flush_bytes
        self._closed = False
        self.committed = False
        self._pipe: WritePipeline | None = None

    def pipeline(
        self,
        *,
        max_in_flight: int = IN_FLIGHT,
        on_written: Callable[[int], None] | None = None,
        sync_every: int = SYNC_EVERY,
    ) -> None:
        """Write and hash on one dedicated thread from now on, while the caller goes on.

        ``write`` only queues the chunk (kept by reference, not copied: pass immutable
        ``bytes``), waiting while more than ``max_in_flight`` bytes are queued; the thread
        writes and hashes them in order, in batches (:mod:`regcore.storage.writepipeline`), and
        ``on_written(written)`` is called on the event loop after each batch reached the file.
        ``flush``, ``sync``, ``verify`` and ``commit`` wait for the queue to drain; a write
        error (``OSError``) is raised by the next ``write`` or ``flush``. ``close`` and
        ``discard`` never wait: the thread closes the descriptor after the work it took.
        Every ``sync_every`` bytes written (0: never), a second thread calls ``fdatasync`` on
        the file in the background, so the fsync of :meth:`sync`/:meth:`commit` finds little
        left to write (200 MiB: ~0.02 s instead of ~0.1 s at the end).
        Call from the event loop that will use the writer, before the first ``write``.
        """
        if self._pipe is None:
            if self._buf:
                raise RuntimeError("pipeline() after buffered writes")
            self._pipe = WritePipeline(self._fd, self.hasher, max_in_flight, on_written, sync_every)

    @property
    def size(self) -> int:
        """Bytes accepted so far (written or buffered)."""
        if self._pipe is not None:
            return self._pipe.accepted
        return self.hasher.size + len(self._buf)

    @property
    def written(self) -> int:
        """Bytes that reached the file (visible to readers of ``path``)."""
        if self._pipe is not None:
            return self._pipe.written
        return self.hasher.size

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._pipe is not None:
            await self._pipe.write(chunk if type(chunk) is bytes else bytes(chunk))
            return
        self._buf += chunk
        if len(self._buf) >= self._flush_bytes:
            await self.flush()

    async def flush(self) -> None:
        if self._pipe is not None:
            await self._pipe.drain()
            return
        if not self._buf:
            return
        data = bytes(self._buf)
        self._buf.clear()
        if len(data) >= 256 * 1024:
            await asyncio.to_thread(self._write_all, data)
        else:
            self._write_all(data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.hasher.update(data)

    async def sync(self) -> None:
        await self.flush()
        await asyncio.to_thread(os.fsync, self._fd)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._pipe is not None:
                self._pipe.close()  # the thread may still be writing: it closes the fd
            else:
                os.close(self._fd)

    async def verify(self, expected: Digest | None = None, size: int | None = None) -> Digest:
        """Write out what is buffered and check the bytes so far against ``expected`` and
        ``size`` (nothing is synced, moved or removed). Returns the digest; raises
        SizeInvalid / DigestInvalid."""
        await self.flush()
        actual = self.hasher.digest()
        if size is not None and size != self.hasher.size:
            raise errors.SizeInvalid(f"expected {size} bytes, got {self.hasher.size}")
        if expected is not None and expected != actual:
            raise errors.DigestInvalid(str(expected))
        return actual

    async def commit(self, expected: Digest | None = None, size: int | None = None) -> Digest:
        """Verify, fsync and move into the store. Raises DigestInvalid / SizeInvalid (temp
        file removed)."""
        try:
            actual = await self.verify(expected, size)
        except errors.RegistryError:
            self.discard()
            raise
        await self.sync()
        self.close()
        await self.store.install(self.path, actual)
        self.committed = True
        return actual

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def __aenter__(self) -> BlobWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.committed:  # not committed: leave nothing behind
            self.discard()


class FilesystemBlobStore:
    """Blobs under ``layout.blobs``; temp files under ``layout.incomplete``."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        layout.ensure()

    def path(self, digest: Digest) -> Path:
        return self.layout.blob_data(digest)

    async def stat(self, digest: Digest) -> int | None:
        try:
            return os.stat(self.path(digest)).st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def temp_path(self) -> Path:
        return self.layout.incomplete / uuid.uuid4().hex

    def writer(
        self, algorithm: str = "sha256", *, flush_bytes: int = DEFAULT_FLUSH_BYTES
    ) -> BlobWriter:
        return BlobWriter(self, self.temp_path(), algorithm=algorithm, flush_bytes=flush_bytes)

    async def install(self, temp: Path, digest: Digest) -> bool:
        """Move a verified, fsynced file into place. Returns False if the blob already existed."""
        return await asyncio.to_thread(self._install, temp, digest)

    def _install(self, temp: Path, digest: Digest) -> bool:
        final = self.path(digest)
        if final.exists():
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)
        fsync_path(final.parent)
        return True

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

    async def delete(self, digest: Digest) -> bool:
        return await asyncio.to_thread(self._delete, digest)

    def _delete(self, digest: Digest) -> bool:
        d = self.layout.blob_dir(digest)
        try:
            (d / "data").unlink()
        except FileNotFoundError:
            return False
        with contextlib.suppress(OSError):
            d.rmdir()
        return True

    def iter_digests(self) -> Iterator[tuple[Digest, int, float]]:
        """Walk committed blobs: (digest, size, atime-or-mtime). Blocking; call in a thread."""
        for alg_dir in _listdir(self.layout.blobs):
            for prefix in _listdir(alg_dir):
                for blob_dir in _listdir(prefix):
                    data = blob_dir / "data"
                    try:
                        st = data.stat()
                        dg = Digest.parse(f"{alg_dir.name}:{blob_dir.name}")
                    except (OSError, errors.RegistryError):
                        continue
                    yield dg, st.st_size, max(st.st_atime, st.st_mtime)

    def recover(self) -> int:
        """Remove temp files left by a crash. Blocking. Returns how many were removed."""
        removed = 0
        for p in _listdir(self.layout.incomplete):
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
        return removed


def _listdir(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if not p.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a regular file or a directory: its entries) to disk. Blocking: call it
    through ``asyncio.to_thread`` from a loop. Raises OSError (FileNotFoundError...)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
