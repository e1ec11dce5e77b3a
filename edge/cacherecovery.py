"""Crash recovery of the blob cache: the files are the truth, the index keeps recency.

At start-up (:meth:`edge.cache.BlobCache.open`) :func:`recover`:

1. removes everything under the store's temp area (fills cut short by a crash, evicted files
   whose unlink never ran): none of it was ever a committed blob. When anything was removed,
   one info line says how many files and bytes;
2. walks the committed blobs and reconciles them with the persisted index
   (:func:`reconcile`): an index entry without a file is deleted, a file without an entry is
   adopted with its access/modification time as last access (file atimes are kept up to date
   on every persisted hit, so recency survives the loss of the index), an entry whose size
   disagrees with its file takes the file's size;
3. returns the entries oldest first, the order eviction follows, and the index changes to
   persist.

Evicting down to a smaller bound is the caller's next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from edge.cacheindex import Persisted
from edge.cachelru import Entry
from regcore import errors
from regcore.digest import Digest
from regcore.storage.interfaces import LocalBlobStore

log = logging.getLogger("edge.cache")


@dataclass(frozen=True)
class Recovery:
    """What recovery found: ``entries`` oldest first; ``changes`` the index must persist
    (``None``: delete the entry); ``temp_removed`` files dropped from the temp area."""

    entries: list[tuple[Digest, Entry]]
    changes: dict[Digest, Entry | None] = field(default_factory=dict)
    temp_removed: int = 0


async def recover(store: LocalBlobStore, persisted: Persisted) -> Recovery:
    """Clean the temp area, walk the blobs, reconcile with ``persisted``. Blocking work runs
    in worker threads; ``persisted`` is consumed."""
    temp_bytes = await asyncio.to_thread(_temp_bytes, store)
    removed = await asyncio.to_thread(store.recover)
    if removed:
        log.info(
            "removed fills left by a crash",
            extra={"count": removed, "bytes": temp_bytes},
        )
    files = await asyncio.to_thread(lambda: list(store.iter_digests()))
    found = reconcile(files, persisted)
    return Recovery(found.entries, found.changes, removed)


def _temp_bytes(store: LocalBlobStore) -> int:
    """Bytes in the store's temp area (what :meth:`recover` is about to remove); 0 for a
    store without a filesystem layout. Blocking."""
    layout = getattr(store, "layout", None)
    if layout is None:
        return 0
    total = 0
    for path in layout.temp_files():
        with contextlib.suppress(OSError):
            total += os.lstat(path).st_size
    return total


def reconcile(files: Iterable[tuple[Digest, int, float]], persisted: Persisted) -> Recovery:
    """Entries for ``files`` ((digest, size, file time)), recency from ``persisted`` where it
    knows the blob. Pure; ``persisted`` is consumed (what is left had no file)."""
    entries: list[tuple[Digest, Entry]] = []
    changes: dict[Digest, Entry | None] = {}
    for digest, size, file_time in files:
        rec = persisted.pop(str(digest), None)
        entry = Entry(size, rec[1] if rec is not None else file_time)
        entries.append((digest, entry))
        if rec is None or rec[0] != size:
            changes[digest] = entry
    for key in persisted:  # index entries without a file
        with contextlib.suppress(errors.RegistryError):
            changes[Digest.parse(key)] = None
    entries.sort(key=lambda item: item[1].atime)
    return Recovery(entries, changes)
