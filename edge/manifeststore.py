"""Where the edge keeps manifests besides the blob cache: their media types (persistent) and
a bounded in-memory LRU of the hottest manifests (bytes + media type by digest).

Both are content-addressed: an entry never changes, it is only evicted.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path

import diskcache

DEFAULT_MEMORY_BYTES = 32 * 1024 * 1024

__all__ = ["DEFAULT_MEMORY_BYTES", "ManifestMemory", "ManifestTypes"]


class ManifestTypes:
    """digest -> media type of the manifests stored in the blob cache (diskcache, persistent).

    Calls run in a worker thread; a bounded in-memory memo keeps hot entries.
    """

    def __init__(self, directory: Path, memo_size: int = 4096) -> None:
        self._dir = directory
        self._db: diskcache.Cache | None = None
        self._memo: OrderedDict[str, str] = OrderedDict()
        self._memo_size = memo_size

    async def open(self) -> None:
        self._db = await asyncio.to_thread(diskcache.Cache, str(self._dir))

    async def close(self) -> None:
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
            self._db = None

    async def get(self, digest: str) -> str | None:
        if digest in self._memo:
            self._memo.move_to_end(digest)
            return self._memo[digest]
        if self._db is None:
            return None
        value = await asyncio.to_thread(self._db.get, digest)
        if isinstance(value, str):
            self._remember(digest, value)
            return value
        return None

    async def put(self, digest: str, media_type: str) -> None:
        self._remember(digest, media_type)
        if self._db is not None:
            await asyncio.to_thread(self._db.set, digest, media_type)

    def _remember(self, digest: str, media_type: str) -> None:
        self._memo[digest] = media_type
        self._memo.move_to_end(digest)
        while len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)


class ManifestMemory:
    """digest -> (manifest bytes, media type), least recently used first out, bounded by bytes.

    Guarantee: the sum of stored bodies never exceeds ``max_bytes``; a body larger than
    ``max_bytes`` is not stored. Entries are immutable (content-addressed). Not thread-safe.
    """

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._lru: OrderedDict[str, tuple[bytes, str]] = OrderedDict()  # oldest first
        self._used = 0

    @property
    def bytes_used(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, digest: str) -> bool:
        return digest in self._lru

    def get(self, digest: str) -> tuple[bytes, str] | None:
        """``(body, media_type)`` or ``None``; refreshes the entry's recency."""
        item = self._lru.get(digest)
        if item is not None:
            self._lru.move_to_end(digest)
        return item

    def put(self, digest: str, body: bytes, media_type: str) -> None:
        """Remember a verified manifest, evicting the least recently used ones to fit."""
        size = len(body)
        if size > self.max_bytes:
            return
        old = self._lru.pop(digest, None)
        if old is not None:
            self._used -= len(old[0])
        while self._used + size > self.max_bytes:
            _, (evicted, _mt) = self._lru.popitem(last=False)
            self._used -= len(evicted)
        self._lru[digest] = (body, media_type)
        self._used += size
