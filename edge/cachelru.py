"""The blob cache's recency order and eviction: :class:`CacheLru`.

Committed blobs in least-recently-used order (oldest first) with their byte total. Eviction
takes the oldest first: the file is detached from the store at once (one rename, so a later
commit of the same digest is never hit by a late unlink) and unlinked in a worker thread; an
open file descriptor (sendfile, a fill reader) keeps working on an evicted blob. Every change
is reported to ``record`` (the persisted index) and freed bytes to ``on_freed`` (space
waiters); evict listeners hear ``(digest, size)`` after each eviction, and one that raises
never stops it.

Not thread-safe: use from one event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from regcore.digest import Digest
from regcore.storage.interfaces import LocalBlobFiles

log = logging.getLogger("edge.cache")

EvictListener = Callable[[Digest, int], None]


@dataclass(slots=True)
class Entry:
    """One cached blob: its size and last access (seconds since the epoch)."""

    size: int
    atime: float


Record = Callable[[Digest, Entry | None], None]  # None: the blob left the cache


class CacheLru:
    """Recency order, byte total and eviction of the committed blobs."""

    def __init__(
        self,
        files: LocalBlobFiles,
        *,
        record: Record,
        on_freed: Callable[[], None],
    ) -> None:
        self._files = files
        self._record = record
        self._on_freed = on_freed
        self._order: OrderedDict[Digest, Entry] = OrderedDict()  # oldest first
        self._used = 0
        self._listeners: list[EvictListener] = []
        self._unlinks: set[asyncio.Task[None]] = set()

    @property
    def bytes_used(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._order)

    def get(self, digest: Digest) -> Entry | None:
        return self._order.get(digest)

    def add_listener(self, listener: EvictListener) -> None:
        self._listeners.append(listener)

    def load(self, entries: Iterable[tuple[Digest, Entry]]) -> None:
        """Replace the order with ``entries`` (oldest first), as recovery found them."""
        self._order = OrderedDict(entries)
        self._used = sum(e.size for e in self._order.values())

    def touch(self, digest: Digest) -> None:
        """Make ``digest`` the most recently used (it must be cached)."""
        entry = self._order[digest]
        entry.atime = time.time()
        self._order.move_to_end(digest)
        self._record(digest, entry)

    def add(self, digest: Digest, size: int) -> None:
        """Count a committed blob as the most recently used (refresh it if already cached)."""
        entry = self._order.get(digest)
        if entry is None:
            entry = self._order[digest] = Entry(size, time.time())
            self._used += size
        else:
            entry.atime = time.time()
            self._order.move_to_end(digest)
        self._record(digest, entry)

    def drop(self, digest: Digest) -> Entry | None:
        """Forget ``digest`` (its file is not touched); its bytes are freed."""
        entry = self._order.pop(digest, None)
        if entry is not None:
            self._used -= entry.size
            self._record(digest, None)
            self._on_freed()
        return entry

    def shrink_to(self, budget: int, *, keep: Digest | None = None) -> None:
        """Evict least recently used blobs until at most ``budget`` bytes are used, never
        ``keep`` (the blob just committed); stops when nothing else is left."""
        while self._used > budget:
            victim = next((d for d in self._order if d != keep), None)
            if victim is None:
                return
            self.evict(victim)

    def evict(self, digest: Digest) -> None:
        """Drop ``digest`` and detach its file now; the unlink runs in a thread."""
        entry = self.drop(digest)
        if entry is None:
            return
        detached = self._files.detach(digest)
        if detached is not None:
            task = asyncio.get_running_loop().create_task(
                asyncio.to_thread(self._files.remove_detached, detached, digest)
            )
            self._unlinks.add(task)
            task.add_done_callback(self._unlinks.discard)
        for listener in self._listeners:
            try:
                listener(digest, entry.size)
            except Exception:  # a metrics callback must not break eviction
                log.exception("evict listener failed")

    async def settle(self) -> None:
        """Wait until the files of evicted blobs are unlinked (returns at once if none are
        pending, without yielding to the loop)."""
        if self._unlinks:
            await asyncio.gather(*list(self._unlinks), return_exceptions=True)
