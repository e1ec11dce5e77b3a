"""The edge's blob cache: blobs by digest on local disk, LRU by bytes, bounded by ``max_bytes``.

On disk (``Layout(directory, v2_prefix=False)``; the same tree as registry:2's blobs)::

    <directory>/
    ├── blobs/<alg>/<hex[:2]>/<hex>/data     complete, verified blobs (the truth)
    ├── _incomplete/<random>                 fills in progress, evicted files awaiting unlink
    └── index/                               diskcache: "alg:hex" -> (size, last access)

Interface (used by edge/fill.py, edge/peers.py, edge/blobs.py, edge/manifests.py)::

    cache = BlobCache(directory, max_bytes, on_evict=None)
    await cache.open()                    # crash recovery + index rebuild; call once
    cache.lookup(digest) -> CachedBlob | None    # refreshes recency
    cache.peek(digest)   -> CachedBlob | None    # no recency refresh
    res = await cache.reserve(size)       # room for a fill; res.release() when abandoned
    w = cache.new_writer()                # BlobWriter on a temp file under _incomplete/
    await cache.commit(w, digest, size, res) -> CachedBlob
    await cache.put_bytes(data, digest) -> CachedBlob
    cache.bytes_used, cache.entries, cache.bytes_reserved
    cache.add_evict_listener(fn)          # fn(digest, size) after each eviction
    await cache.close()

Guarantees:
- Bound: ``bytes_used + bytes_reserved <= max_bytes`` at all times. :meth:`reserve` evicts
  least-recently-used blobs until the new reservation fits; while running fills hold the rest
  it waits (up to ``reserve_timeout``) for them to finish, then raises
  :class:`errors.Unavailable`. A size larger than ``max_bytes`` raises
  :class:`errors.SizeTooLarge` at once.
- Only verified blobs are indexed: :meth:`commit` checks digest and size first (raising
  :class:`errors.DigestInvalid` / :class:`errors.SizeInvalid`, temp file removed, reservation
  released).
- :meth:`lookup`/:meth:`peek` never return an entry whose file is gone: such an entry is
  dropped from the index (and its bytes from the accounting) and ``None`` is returned.
- Eviction renames the file out of ``blobs/`` synchronously (so a later commit of the same
  digest is never deleted by a late unlink) and unlinks it in a thread; an open file
  descriptor (sendfile, a fill reader) keeps working on an evicted blob.
- Crash recovery: :meth:`open` removes ``_incomplete/``, walks ``blobs/`` and reconciles it
  with the persisted index: files are the truth (index entries without a file are dropped,
  files without an entry are added with their atime/mtime as last access), then evicts down
  to ``max_bytes``. Recency survives restarts through the index, and through file atimes
  (set on every persisted hit) when the index is lost.
- All diskcache calls run on one dedicated worker thread, batched: hits only mark an entry
  dirty in memory, a background task persists dirty entries every ``flush_interval`` seconds,
  and :meth:`close` persists the rest.

Not thread-safe: use from one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import diskcache

from regcore import errors
from regcore.digest import Digest
from regcore.storage.blobstore import BlobWriter, FilesystemBlobStore
from regcore.storage.layout import Layout

log = logging.getLogger(__name__)

_T = TypeVar("_T")
EvictListener = Callable[[Digest, int], None]


@dataclass(frozen=True, slots=True)
class CachedBlob:
    """A complete, verified blob: serve ``path`` (sendfile) with ``size`` as Content-Length."""

    digest: Digest
    path: Path
    size: int


class Reservation:
    """Room held in the cache for a blob being written. :meth:`release` is idempotent."""

    __slots__ = ("_cache", "released", "size")

    def __init__(self, cache: BlobCache, size: int) -> None:
        self._cache = cache
        self.size = size
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._cache._unreserve(self.size)


@dataclass(slots=True)
class _Entry:
    size: int
    atime: float


class BlobCache:
    """Blobs by digest on local disk, indexed with diskcache; LRU by bytes, bounded by max_bytes."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        *,
        on_evict: EvictListener | None = None,
        flush_interval: float = 1.0,
        reserve_timeout: float = 30.0,
        writer_flush_bytes: int = 64 * 1024,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.layout = Layout(self.directory, v2_prefix=False)
        self.store = FilesystemBlobStore(self.layout)
        self.flush_interval = flush_interval
        self.reserve_timeout = reserve_timeout
        self.writer_flush_bytes = writer_flush_bytes
        self._listeners: list[EvictListener] = [on_evict] if on_evict else []
        self._lru: OrderedDict[Digest, _Entry] = OrderedDict()  # oldest first
        self._used = 0
        self._reserved = 0
        self._dirty: dict[Digest, _Entry | None] = {}  # None: delete from the index
        self._space = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._index: diskcache.Cache | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._unlinks: set[asyncio.Task[None]] = set()

    # -- accounting ---------------------------------------------------------------------
    @property
    def bytes_used(self) -> int:
        """Bytes of committed blobs."""
        return self._used

    @property
    def bytes_reserved(self) -> int:
        """Bytes held for fills in progress."""
        return self._reserved

    @property
    def entries(self) -> int:
        return len(self._lru)

    def add_evict_listener(self, listener: EvictListener) -> None:
        self._listeners.append(listener)

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        """Remove incomplete files, rebuild the index from disk, evict down to the bound."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blobcache-index")
        await asyncio.to_thread(self.store.recover)
        files = await asyncio.to_thread(lambda: list(self.store.iter_digests()))
        persisted = await self._in_index_thread(self._load_index)
        entries: list[tuple[Digest, _Entry]] = []
        for digest, size, file_time in files:
            rec = persisted.pop(str(digest), None)
            atime = rec[1] if rec is not None else file_time
            entries.append((digest, _Entry(size, atime)))
            if rec is None or rec[0] != size:
                self._dirty[digest] = entries[-1][1]
        for key in persisted:  # index entries without a file
            with contextlib.suppress(errors.RegistryError):
                self._dirty[Digest.parse(key)] = None
        entries.sort(key=lambda item: item[1].atime)
        self._lru = OrderedDict(entries)
        self._used = sum(e.size for e in self._lru.values())
        self._evict_until(0)
        await self._flush_dirty()
        self._flusher = asyncio.create_task(self._flush_loop(), name="blobcache-flush")
        log.info(
            "blob cache opened: %d blobs, %d bytes (max %d)",
            self.entries,
            self._used,
            self.max_bytes,
        )

    async def close(self) -> None:
        """Persist pending index updates, finish unlinks, close the index. Idempotent."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self._unlinks:
            await asyncio.gather(*self._unlinks, return_exceptions=True)
        if self._executor is not None:
            await self._flush_dirty()
            await self._in_index_thread(self._close_index)
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- lookups ----------------------------------------------------------------------------
    def lookup(self, digest: Digest) -> CachedBlob | None:
        """The blob if cached (and its file still there); refreshes its recency."""
        blob = self.peek(digest)
        if blob is not None:
            entry = self._lru[digest]
            entry.atime = time.time()
            self._lru.move_to_end(digest)
            self._dirty[digest] = entry
        return blob

    def peek(self, digest: Digest) -> CachedBlob | None:
        """The blob if cached, without touching recency. Drops an entry whose file vanished."""
        entry = self._lru.get(digest)
        if entry is None:
            return None
        path = self.store.path(digest)
        try:
            size = os.stat(path).st_size
        except (FileNotFoundError, NotADirectoryError):
            size = -1
        if size != entry.size:
            log.warning("cache entry %s lost its file; dropped", digest)
            self._drop(digest)
            return None
        return CachedBlob(digest, path, entry.size)

    def path_for(self, digest: Digest) -> Path:
        """Where a committed blob lives (whether or not it is there now)."""
        return self.store.path(digest)

    # -- writing ------------------------------------------------------------------------------
    async def reserve(self, size: int) -> Reservation:
        """Hold ``size`` bytes, evicting LRU blobs as needed. Raises SizeTooLarge / Unavailable."""
        if size < 0:
            raise errors.SizeInvalid(f"negative size {size}")
        if size > self.max_bytes:
            raise errors.SizeTooLarge(
                f"blob of {size} bytes exceeds the cache size {self.max_bytes}"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reserve_timeout
        while True:
            if self._reserved + size <= self.max_bytes:  # eviction alone can make room
                self._evict_until(size)
            if self._used + self._reserved + size <= self.max_bytes:
                self._reserved += size
                reservation = Reservation(self, size)
                if self._unlinks:  # evicted files leave the disk before new bytes land on it
                    try:
                        await asyncio.gather(*list(self._unlinks), return_exceptions=True)
                    except BaseException:
                        reservation.release()
                        raise
                return reservation
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise errors.Unavailable(
                    f"cache full: {self._reserved} bytes held by fills in progress",
                    message="cache full, try again later",
                )
            self._space.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._space.wait(), remaining)

    def new_writer(self, *, flush_bytes: int | None = None) -> BlobWriter:
        """A BlobWriter on a fresh temp file under ``_incomplete/``."""
        return self.store.writer(flush_bytes=flush_bytes or self.writer_flush_bytes)

    async def commit(
        self, writer: BlobWriter, digest: Digest, size: int, reservation: Reservation
    ) -> CachedBlob:
        """Verify, install and index. The reservation is released (converted) in every case.

        Raises DigestInvalid / SizeInvalid (temp file removed, nothing indexed).
        """
        try:
            if size > reservation.size:
                writer.discard()
                raise errors.SizeInvalid(f"{size} bytes exceed the {reservation.size} reserved")
            await writer.commit(digest, size)
        except BaseException:
            writer.discard()
            reservation.release()
            raise
        reservation.release()
        return self._index_new(digest, size)

    async def put_bytes(self, data: bytes, digest: Digest) -> CachedBlob:
        """Store a small object (a manifest) verified against ``digest``; idempotent."""
        existing = self.lookup(digest)
        if existing is not None:
            return existing
        reservation = await self.reserve(len(data))
        writer = self.new_writer()
        try:
            await writer.write(data)
        except BaseException:
            writer.discard()
            reservation.release()
            raise
        return await self.commit(writer, digest, len(data), reservation)

    # -- internals ------------------------------------------------------------------------------
    def _index_new(self, digest: Digest, size: int) -> CachedBlob:
        entry = self._lru.get(digest)
        if entry is None:
            entry = _Entry(size, time.time())
            self._lru[digest] = entry
            self._used += size
        else:
            entry.atime = time.time()
            self._lru.move_to_end(digest)
        self._dirty[digest] = entry
        # A concurrent commit may have pushed us over while reservations were converted.
        self._evict_until(0, keep=digest)
        return CachedBlob(digest, self.store.path(digest), size)

    def _unreserve(self, size: int) -> None:
        self._reserved -= size
        self._space.set()

    def _drop(self, digest: Digest) -> _Entry | None:
        entry = self._lru.pop(digest, None)
        if entry is not None:
            self._used -= entry.size
            self._dirty[digest] = None
            self._space.set()
        return entry

    def _evict_until(self, incoming: int, *, keep: Digest | None = None) -> None:
        """Evict least recently used blobs until ``incoming`` more bytes fit (or none are left)."""
        while self._lru and self._used + self._reserved + incoming > self.max_bytes:
            digest = next(iter(self._lru))
            if digest == keep:
                if len(self._lru) == 1:
                    return
                self._lru.move_to_end(digest)
                continue
            self._evict(digest)

    def _evict(self, digest: Digest) -> None:
        entry = self._drop(digest)
        if entry is None:
            return
        src = self.store.path(digest)
        doomed = self.layout.incomplete / f"evicted-{uuid.uuid4().hex}"
        try:
            os.rename(src, doomed)
        except FileNotFoundError:
            doomed = None  # already gone
        if doomed is not None:
            task = asyncio.get_running_loop().create_task(
                asyncio.to_thread(_unlink_and_prune, doomed, src.parent)
            )
            self._unlinks.add(task)
            task.add_done_callback(self._unlinks.discard)
        for listener in self._listeners:
            try:
                listener(digest, entry.size)
            except Exception:  # a metrics callback must not break eviction
                log.exception("evict listener failed")

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self._flush_dirty()
            except Exception:
                log.exception("blob cache index flush failed")

    async def _flush_dirty(self) -> None:
        if not self._dirty or self._executor is None:
            return
        batch = {d: (None if e is None else (e.size, e.atime)) for d, e in self._dirty.items()}
        self._dirty.clear()
        await self._in_index_thread(self._write_index, batch)

    async def _in_index_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        assert self._executor is not None, "BlobCache.open() was not called"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- index thread ---------------------------------------------------------------------------
    def _load_index(self) -> dict[str, tuple[int, float]]:
        try:
            self._index = diskcache.Cache(str(self.directory / "index"))
            out: dict[str, tuple[int, float]] = {}
            for key in self._index.iterkeys():
                value = self._index.get(key)
                if isinstance(value, tuple) and len(value) == 2:
                    out[str(key)] = (int(value[0]), float(value[1]))
            return out
        except Exception:  # corrupt index: rebuild from the files
            log.exception("blob cache index unreadable; rebuilding from disk")
            self._close_index()
            shutil.rmtree(self.directory / "index", ignore_errors=True)
            self._index = diskcache.Cache(str(self.directory / "index"))
            return {}

    def _write_index(self, batch: dict[Digest, tuple[int, float] | None]) -> None:
        assert self._index is not None
        with self._index.transact():
            for digest, value in batch.items():
                if value is None:
                    self._index.delete(str(digest))
                else:
                    self._index.set(str(digest), value)
        for digest, value in batch.items():  # atime carries recency if the index is lost
            if value is not None:
                with contextlib.suppress(OSError):
                    path = self.store.path(digest)
                    os.utime(path, (value[1], os.stat(path).st_mtime))

    def _close_index(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None


def _unlink_and_prune(path: Path, blob_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(OSError):
        blob_dir.rmdir()
