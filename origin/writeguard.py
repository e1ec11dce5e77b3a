"""The lock that makes online garbage collection safe: writers share it, the sweep owns it.

:class:`WriteGuard` is an asyncio readers-writer lock plus a record of recently used digests:

* **shared** (:meth:`WriteGuard.shared`) is taken by every request that makes a blob or
  manifest reachable or relies on one existing: a blob commit (upload PUT, monolithic POST,
  cross-repository mount), a manifest PUT (from its reference checks to its tag write), and the
  existence check of a blob GET/HEAD. Such a request enters :meth:`WriteGuard.using` with the
  digests it uses: the shared lock, and a touch of those digests **when the section ends**
  (after its last write). Shared holders run concurrently; taking it costs no await when no
  sweep is waiting. It is re-entrant per task.
* **exclusive** (:meth:`WriteGuard.exclusive`) is taken by the garbage collector and by
  retention for each small batch of deletions. Inside, they re-check each candidate with
  :meth:`WriteGuard.touched_since` before deleting it. Writer-preferring: once a batch waits,
  new shared holders wait behind it, so a stream of pushes cannot starve the sweep; batches
  are short, so pushes never wait long.

Why this is enough: a request that used digest D either finished its shared section before
the batch took the lock — then D's touch is visible to the re-check and D is kept — or starts
after the batch released it, and then sees D gone (and answers BLOB_UNKNOWN /
MANIFEST_BLOB_UNKNOWN, so nothing is stored that points at a missing blob). Work done before
the collector started is on disk by then and found by its mark phase. Work not found by the
mark was written after the collector started, so the touch at the end of its section is later
than the start: that is why the touch is taken on leaving, not on entering. A section that
began before ``start - grace`` (a slow commit, a copy from another filesystem, a loaded
machine) and wrote its link after the mark scanned that repository would otherwise carry a
touch older than the re-check's horizon, and D would be deleted under a completed commit or a
manifest PUT that already answered 201.

The touch record is in memory (bounded: entries older than ``keep`` seconds are pruned, and at
most ``max_entries`` are kept, oldest dropped first) and is lost at restart; the grace period
on file times covers that gap. One guard per origin process: two processes serving one root
do not share it (``quayside gc`` therefore asks a running origin to collect, see
:mod:`origin.rootlock`).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Protocol

from regcore.digest import Digest


class WriteGuard:
    """Readers-writer lock + recently touched digests. For the tasks of one event loop."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        keep: float = 24 * 3600.0,
        max_entries: int = 1_000_000,
    ) -> None:
        self.clock = clock
        self.keep = keep
        self.max_entries = max_entries
        self._readers: dict[asyncio.Task[object] | None, int] = {}
        self._writer = False
        self._writers_waiting = 0
        self._readers_waiting = 0
        self._generation = 0
        self._owed = 0
        self._changed = asyncio.Event()
        self._touched: OrderedDict[Digest, float] = OrderedDict()

    # -- lock --------------------------------------------------------------------------------
    @property
    def readers(self) -> int:
        return sum(self._readers.values())

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """Hold the lock in shared mode (waits only while a sweep batch holds or wants it)."""
        task = asyncio.current_task()
        held = self._readers.get(task, 0)
        if not held and (self._writer or self._writers_waiting):
            await self._wait_turn()
        self._readers[task] = held + 1
        try:
            yield
        finally:
            left = self._readers[task] - 1
            if left:
                self._readers[task] = left
            else:
                del self._readers[task]
                if not self._readers:
                    self._notify()

    async def _wait_turn(self) -> None:
        # Wait behind the current (or waiting) writer; once it releases, the readers that
        # waited for it go first, even if the next writer already waits (no starvation).
        generation = self._generation
        self._readers_waiting += 1
        try:
            while self._writer or (self._writers_waiting and self._generation == generation):
                await self._wait()
        finally:
            self._readers_waiting -= 1
            if self._generation != generation and self._owed:
                self._owed -= 1
                if not self._owed:
                    self._notify()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the lock alone: no shared holder runs until the block exits."""
        self._writers_waiting += 1
        try:
            while self._writer or self._readers or self._owed:
                await self._wait()
        except BaseException:  # cancelled while waiting: let the readers behind us go
            self._writers_waiting -= 1
            self._notify()
            raise
        self._writers_waiting -= 1
        self._writer = True
        try:
            yield
        finally:
            self._writer = False
            self._generation += 1
            self._owed = self._readers_waiting  # they enter before the next writer
            self._notify()

    async def _wait(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        # Wake every waiter; each re-checks its condition (a fresh event for the next round).
        self._changed.set()
        self._changed = asyncio.Event()

    @asynccontextmanager
    async def using(self, digests: Iterable[Digest]) -> AsyncIterator[None]:
        """:meth:`shared`, and :meth:`touch` of ``digests`` as the section ends (also when it
        raises), still under the lock: the touch is never older than a write of the section."""
        used = tuple(digests)
        async with self.shared():
            try:
                yield
            finally:
                self.touch(used)

    # -- touch record ------------------------------------------------------------------------
    def touch(self, digests: Iterable[Digest]) -> None:
        """Record that ``digests`` were used now (call inside :meth:`shared`)."""
        now = self.clock()
        touched = self._touched
        for d in digests:
            touched[d] = now
            touched.move_to_end(d)
        self._prune(now)

    def touched_since(self, digest: Digest, since: float) -> bool:
        """True if ``digest`` was touched at or after ``since`` (wall-clock seconds)."""
        t = self._touched.get(digest)
        return t is not None and t >= since

    def _prune(self, now: float) -> None:
        touched = self._touched
        cutoff = now - self.keep
        while touched:
            t = next(iter(touched.values()))
            if t >= cutoff and len(touched) <= self.max_entries:
                break
            touched.popitem(last=False)


class CommitHook(Protocol):
    """What the upload manager calls around installing and linking a blob
    (:meth:`origin.ops.OriginOps.blob_commit`: shared guard, quota admission, touch)."""

    def blob_commit(
        self, name: str, digest: Digest, size: int
    ) -> AbstractAsyncContextManager[None]: ...


def commit_scope(
    hook: CommitHook | None, name: str, digest: Digest, size: int
) -> AbstractAsyncContextManager[None]:
    """``hook.blob_commit(...)``, or a no-op without a hook."""
    return nullcontext() if hook is None else hook.blob_commit(name, digest, size)
