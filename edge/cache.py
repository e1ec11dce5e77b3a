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
    w = cache.new_writer()                # StagedBlob on a temp file under _incomplete/
    await cache.commit(w, digest, size, res) -> CachedBlob
    await cache.put_bytes(data, digest) -> CachedBlob
    cache.bytes_used, cache.entries, cache.bytes_reserved
    cache.add_evict_listener(fn)          # fn(digest, size) after each eviction
    await cache.close()

:class:`BlobCache` composes small parts, one concern each: the store
(:class:`~regcore.storage.interfaces.LocalBlobStore`: files, verified commit, detach), the
recency order and eviction (:mod:`edge.cachelru`), space reservations
(:mod:`edge.cachespace`), the diskcache index on its thread (:mod:`edge.cacheindex`) and
crash recovery (:mod:`edge.cacherecovery`).

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
import logging
from pathlib import Path

from edge.cacheindex import CacheIndex
from edge.cachelru import CacheLru, EvictListener
from edge.cacherecovery import recover
from edge.cachespace import CacheSpace, Reservation
from regcore import errors
from regcore.digest import Digest
from regcore.storage.blobstore import FilesystemBlobStore
from regcore.storage.interfaces import BlobFile, LocalBlobStore, StagedBlob
from regcore.storage.layout import Layout

__all__ = ["BlobCache", "CachedBlob", "EvictListener", "Reservation"]

log = logging.getLogger("edge.cache")

# A complete, verified blob: serve ``path`` (sendfile) with ``size`` as Content-Length.
CachedBlob = BlobFile


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
        self.store: LocalBlobStore = FilesystemBlobStore(self.layout)
        self.reserve_timeout = reserve_timeout
        self.writer_flush_bytes = writer_flush_bytes
        self._space = CacheSpace(max_bytes)
        self._index = CacheIndex(
            self.directory / "index", touch=self.store.touch, flush_interval=flush_interval
        )
        self._lru = CacheLru(self.store, record=self._index.record, on_freed=self._space.freed)
        if on_evict is not None:
            self._lru.add_listener(on_evict)

    # -- accounting ---------------------------------------------------------------------
    @property
    def bytes_used(self) -> int:
        """Bytes of committed blobs."""
        return self._lru.bytes_used

    @property
    def bytes_reserved(self) -> int:
        """Bytes held for fills in progress."""
        return self._space.reserved

    @property
    def entries(self) -> int:
        return len(self._lru)

    def add_evict_listener(self, listener: EvictListener) -> None:
        self._lru.add_listener(listener)

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        """Remove incomplete files, rebuild the index from disk, evict down to the bound."""
        persisted = await self._index.open()
        recovery = await recover(self.store, persisted)
        self._lru.load(recovery.entries)
        for digest, entry in recovery.changes.items():
            self._index.record(digest, entry)
        self._make_room(0)
        await self._index.flush()
        self._index.start()
        log.info(
            "blob cache opened: %d blobs, %d bytes (max %d)",
            self.entries,
            self.bytes_used,
            self.max_bytes,
        )

    async def close(self) -> None:
        """Finish unlinks, persist pending index updates, close the index. Idempotent."""
        await self._lru.settle()
        await self._index.close()

    # -- lookups ----------------------------------------------------------------------------
    def lookup(self, digest: Digest) -> CachedBlob | None:
        """The blob if cached (and its file still there); refreshes its recency."""
        blob = self.peek(digest)
        if blob is not None:
            self._lru.touch(digest)
        return blob

    def peek(self, digest: Digest) -> CachedBlob | None:
        """The blob if cached, without touching recency. Drops an entry whose file vanished."""
        entry = self._lru.get(digest)
        if entry is None:
            return None
        blob = self.store.file(digest)
        if blob is None or blob.size != entry.size:
            log.warning("cache entry %s lost its file; dropped", digest)
            self._lru.drop(digest)
            return None
        return blob

    def path_for(self, digest: Digest) -> Path:
        """Where a committed blob lives (whether or not it is there now)."""
        return self.store.path(digest)

    # -- writing ------------------------------------------------------------------------------
    async def reserve(self, size: int) -> Reservation:
        """Hold ``size`` bytes, evicting LRU blobs as needed. Raises SizeTooLarge / Unavailable."""
        self._space.check(size)
        deadline = asyncio.get_running_loop().time() + self.reserve_timeout
        while True:
            if self._space.reserved + size <= self.max_bytes:  # eviction alone can make room
                self._make_room(size)
            if self.bytes_used + self._space.reserved + size <= self.max_bytes:
                reservation = self._space.hold(size)
                try:  # evicted files leave the disk before new bytes land on it
                    await self._lru.settle()
                except BaseException:
                    reservation.release()
                    raise
                return reservation
            await self._space.wait(deadline)

    def new_writer(self, *, flush_bytes: int | None = None) -> StagedBlob:
        """A staged writer on a fresh temp file under ``_incomplete/``."""
        return self.store.writer(flush_bytes=flush_bytes or self.writer_flush_bytes)

    async def commit(
        self, writer: StagedBlob, digest: Digest, size: int, reservation: Reservation
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
        self._lru.add(digest, size)
        # A concurrent commit may have pushed us over while reservations were converted.
        self._make_room(0, keep=digest)
        return CachedBlob(digest, self.store.path(digest), size)

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

    def _make_room(self, incoming: int, *, keep: Digest | None = None) -> None:
        """Evict LRU blobs until ``incoming`` more bytes fit beside the reservations."""
        self._lru.shrink_to(self.max_bytes - self._space.reserved - incoming, keep=keep)
