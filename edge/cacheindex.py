"""The blob cache's persisted index: :class:`CacheIndex`, a diskcache on its own thread.

``"alg:hex" -> (size, last access)`` for every cached blob, so recency survives restarts.

Guarantees:
- Every diskcache call runs on one dedicated worker thread, never on the event loop.
- Changes are batched: :meth:`CacheIndex.record` only marks an entry dirty in memory; a
  background task (:meth:`CacheIndex.start`) persists the dirty entries every
  ``flush_interval`` seconds in one transaction, and :meth:`CacheIndex.close` persists the
  rest. A failed periodic flush is logged, not raised.
- After each persisted batch, ``touch(digest, atime)`` runs on the index thread for every
  entry written, so file access times carry recency too if the index is lost.
- An unreadable index is deleted and started afresh (:meth:`CacheIndex.open` returns
  nothing): the files are the truth (see :mod:`edge.cacherecovery`).

Use from one event loop; :meth:`open` before anything else.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import diskcache

from edge.cachelru import Entry
from regcore.background import cancel_and_wait
from regcore.digest import Digest

log = logging.getLogger("edge.cache")

_T = TypeVar("_T")
Persisted = dict[str, tuple[int, float]]  # "alg:hex" -> (size, last access)


class CacheIndex:
    """The diskcache under ``directory``, used from one dedicated thread."""

    def __init__(
        self,
        directory: Path,
        *,
        touch: Callable[[Digest, float], None],
        flush_interval: float = 1.0,
    ) -> None:
        self.directory = directory
        self.flush_interval = flush_interval
        self._touch = touch
        self._dirty: dict[Digest, Entry | None] = {}  # None: delete from the index
        self._executor: ThreadPoolExecutor | None = None
        self._db: diskcache.Cache | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def open(self) -> Persisted:
        """Start the index thread and read every persisted entry (none if unreadable)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blobcache-index")
        return await self._in_thread(self._load)

    def record(self, digest: Digest, entry: Entry | None) -> None:
        """Mark ``digest`` for the next flush: persist ``entry`` (read at flush time), or
        delete it when None."""
        self._dirty[digest] = entry

    def start(self) -> None:
        """Start the periodic flush task (after :meth:`open`)."""
        self._flusher = asyncio.create_task(self._flush_loop(), name="blobcache-flush")

    async def flush(self) -> None:
        """Persist every dirty entry now, in one transaction on the index thread."""
        if not self._dirty or self._executor is None:
            return
        batch = {d: (None if e is None else (e.size, e.atime)) for d, e in self._dirty.items()}
        self._dirty.clear()
        await self._in_thread(self._write, batch)

    async def close(self) -> None:
        """Stop the periodic flush, persist the rest, close the index. Idempotent."""
        if self._flusher is not None:
            await cancel_and_wait(self._flusher)
            self._flusher = None
        if self._executor is not None:
            await self.flush()
            await self._in_thread(self._close)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception:
                log.exception("blob cache index flush failed")

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        assert self._executor is not None, "CacheIndex.open() was not called"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- on the index thread ---------------------------------------------------------------
    def _load(self) -> Persisted:
        try:
            self._db = diskcache.Cache(str(self.directory))
            out: Persisted = {}
            for key in self._db.iterkeys():
                value = self._db.get(key)
                if isinstance(value, tuple) and len(value) == 2:
                    out[str(key)] = (int(value[0]), float(value[1]))
            return out
        except Exception:  # corrupt index: rebuild from the files
            log.exception("blob cache index unreadable; rebuilding from disk")
            self._close()
            shutil.rmtree(self.directory, ignore_errors=True)
            self._db = diskcache.Cache(str(self.directory))
            return {}

    def _write(self, batch: dict[Digest, tuple[int, float] | None]) -> None:
        assert self._db is not None
        with self._db.transact():
            for digest, value in batch.items():
                if value is None:
                    self._db.delete(str(digest))
                else:
                    self._db.set(str(digest), value)
        for digest, value in batch.items():  # atime carries recency if the index is lost
            if value is not None:
                self._touch(digest, value[1])

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
