"""A bounded FIFO queue on disk: one file per pending item, in one directory.

Used for notification endpoints (``<root>/quayside/notifications/<endpoint>/``) and replication
targets (``<root>/quayside/replication/<target>/``). Guarantees:

- :meth:`DiskQueue.put` writes each item to a temp file (name starting with ``.``, never
  listed) and renames it into place, so a reader never sees half an item; with ``sync`` the file
  and the directory are fsynced first (survives power loss; without it, process crashes and
  restarts only). Items are named ``<time ns>-<pid>-<seq>.json``: listing order is enqueue order
  within a process, and time order across processes (the ``quayside`` commands enqueue too).
- An item leaves the queue only by :meth:`DiskQueue.remove` (the worker calls it after the item
  was handled), so a restart in between hands the item out again: at-least-once, and exactly
  once unless the process dies between the endpoint's answer and the unlink.
- Bounded: a put that would take the queue beyond ``maxpending`` items drops the new item and
  counts it (the caller reports it); the bound is checked against a count refreshed at each
  :meth:`DiskQueue.pending` scan, so concurrent writers may overshoot it slightly.
- :meth:`DiskQueue.lock` takes an exclusive ``flock`` on ``.lock`` (non-blocking): one worker
  per directory even with several processes on one root.

All methods block (file system calls): call them through ``asyncio.to_thread`` from a loop.
Thread-safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import threading
import time
import uuid
from pathlib import Path

from regcore.storage.blobstore import fsync_path

__all__ = ["DiskQueue"]


class DiskQueue:
    """See the module docstring."""

    def __init__(self, directory: str | Path, maxpending: int) -> None:
        self.directory = Path(directory)
        self.maxpending = maxpending
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count()
        self._mutex = threading.Lock()
        self._count = len(self._names())
        self._lock_fd: int | None = None

    def _names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.directory) if n.endswith(".json"))
        except FileNotFoundError:
            return []

    def __len__(self) -> int:
        return self._count

    def put(self, items: list[bytes], *, sync: bool = False) -> int:
        """Enqueue ``items`` in order; returns how many were dropped because the queue was full."""
        dropped = 0
        written: list[Path] = []
        for data in items:
            with self._mutex:
                if self._count >= self.maxpending:
                    dropped += 1
                    continue
                self._count += 1
                name = f"{time.time_ns():020d}-{os.getpid():07d}-{next(self._seq):09d}.json"
            tmp = self.directory / f".tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
            final = self.directory / name
            os.replace(tmp, final)
            written.append(final)
        if sync and written:
            fsync_path(self.directory)
        return dropped

    def pending(self, limit: int | None = None) -> list[Path]:
        """The oldest ``limit`` items (all with None), oldest first; refreshes the count."""
        names = self._names()
        with self._mutex:
            self._count = len(names)
        return [self.directory / n for n in (names if limit is None else names[:limit])]

    @staticmethod
    def read(path: Path) -> bytes | None:
        """An item's bytes; None if it was removed meanwhile."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, path: Path) -> None:
        """Take a handled item out of the queue (idempotent)."""
        try:
            path.unlink()
        except FileNotFoundError:
            return
        with self._mutex:
            self._count = max(0, self._count - 1)

    def lock(self) -> bool:
        """Try to become this directory's only worker (see the module docstring)."""
        if self._lock_fd is not None:
            return True
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
