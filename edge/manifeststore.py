"""Where the edge keeps manifests: one record per digest, its media type stored with its bytes.

A :class:`ManifestRecord` is ``(digest, media_type, body)``: the bytes exactly as the upstream
sent them (verified against the digest before they are stored) and the media type the
upstream declared for them. The two are written and read together, so they cannot disagree.

:class:`ManifestStore` keeps records in two tiers:

- :class:`ManifestMemory`: the hottest records in memory, least recently used out first,
  bounded by bytes (32 MiB by default). A hit costs no thread, no disk, no sqlite.
- :class:`ManifestDisk`: every record on disk (``<cache.dir>/manifests/``, a diskcache: one
  entry per digest holding ``media type + "\\n" + body``, written in one transaction),
  least recently used out first beyond ``max_bytes``. Records survive restarts; a record whose
  body no longer hashes to its digest (disk corruption) is dropped and reads as a miss.

Records are content-addressed: a record never changes, it is only evicted. Not thread-safe:
use from one event loop (disk calls run in worker threads).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import diskcache

from regcore import errors
from regcore.digest import Digest

DEFAULT_MEMORY_BYTES = 32 * 1024 * 1024
MAX_DISK_BYTES = 256 * 1024 * 1024
DISK_SHARE = 16  # the manifest store's part of the edge's cache bound: 1/16, at most 256 MiB
Source = Literal["memory", "disk"]

__all__ = [
    "DEFAULT_MEMORY_BYTES",
    "ManifestDisk",
    "ManifestMemory",
    "ManifestRecord",
    "ManifestStore",
    "disk_share",
]


def disk_share(cache_bytes: int) -> int:
    """The bytes of an edge's cache bound ``cache_bytes`` that go to manifests on disk."""
    return min(MAX_DISK_BYTES, cache_bytes // DISK_SHARE)


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    """A verified manifest: ``body`` hashes to ``digest``; ``media_type`` has no line break."""

    digest: str
    media_type: str
    body: bytes


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


class ManifestDisk:
    """Records on disk (diskcache), least recently used out beyond ``max_bytes``.

    The bound is diskcache's ``size_limit`` (its database pages included), enforced as each
    record is written. Every call runs in a worker thread. :meth:`get` before :meth:`open` or
    after :meth:`close` is a miss and :meth:`put` does nothing.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._db: diskcache.Cache | None = None

    async def open(self) -> None:
        self._db = await asyncio.to_thread(
            diskcache.Cache,
            str(self.directory),
            size_limit=self.max_bytes,
            eviction_policy="least-recently-used",
        )

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await asyncio.to_thread(db.close)

    async def get(self, digest: str) -> ManifestRecord | None:
        """The record of ``digest`` (refreshing its recency), or ``None``; a record that is
        malformed or does not hash to ``digest`` is deleted and reads as ``None``."""
        db = self._db
        if db is None:
            return None
        value = await asyncio.to_thread(db.get, digest)
        if value is None:
            return None
        record = _decode(digest, value)
        if record is None:
            await asyncio.to_thread(db.delete, digest)
        return record

    async def put(self, record: ManifestRecord) -> None:
        """Store ``record`` (media type and bytes in one write); idempotent."""
        if "\n" in record.media_type:
            raise ValueError("a media type has no line break")
        db = self._db
        if db is not None:
            value = record.media_type.encode() + b"\n" + record.body
            await asyncio.to_thread(db.set, record.digest, value)

    async def delete(self, digest: str) -> None:
        """Forget ``digest``'s record (no error when there is none)."""
        db = self._db
        if db is not None:
            await asyncio.to_thread(db.delete, digest)


def _decode(digest: str, value: object) -> ManifestRecord | None:
    if not isinstance(value, bytes):
        return None
    head, sep, body = value.partition(b"\n")
    if not sep:
        return None
    try:
        expected = Digest.parse(digest)
    except errors.RegistryError:
        return None
    if Digest.of(body, expected.algorithm) != expected:
        return None
    return ManifestRecord(digest, head.decode(errors="replace"), body)


class ManifestStore:
    """Memory in front of disk (see the module docstring). One per application."""

    def __init__(self, directory: Path, *, disk_bytes: int, memory_bytes: int) -> None:
        self.memory = ManifestMemory(memory_bytes)
        self.disk = ManifestDisk(directory, disk_bytes)

    async def open(self) -> None:
        await self.disk.open()

    async def close(self) -> None:
        await self.disk.close()

    def memory_bytes_used(self) -> int:
        """Bytes of manifests held in memory now."""
        return self.memory.bytes_used

    async def get(
        self, digest: str, *, remember: bool = True
    ) -> tuple[ManifestRecord, Source] | None:
        """The record of ``digest`` and where it was found (memory first), or ``None``.

        A record read from disk is kept in memory too when ``remember`` is true.
        """
        item = self.memory.get(digest)
        if item is not None:
            return ManifestRecord(digest, item[1], item[0]), "memory"
        record = await self.disk.get(digest)
        if record is None:
            return None
        if remember:
            self.memory.put(digest, record.body, record.media_type)
        return record, "disk"

    async def put(self, record: ManifestRecord) -> None:
        """Store a verified record on disk and in memory."""
        await self.disk.put(record)
        self.memory.put(record.digest, record.body, record.media_type)
