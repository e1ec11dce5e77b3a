"""The queue behind a pipelined :class:`regcore.storage.blobwriter.BlobWriter`.

:class:`WritePipeline` takes chunks on the event loop and hands them, in order, to one
dedicated thread that writes and hashes them (``os.write`` and hashlib release the GIL for
large buffers, so the loop goes on receiving meanwhile):

- batches of about :data:`BATCH` bytes, or what is pending once the oldest chunk waited
  :data:`LINGER` seconds; the first bytes go at once;
- ``write`` waits while more than ``max_in_flight`` bytes are queued (bounded memory);
- ``on_written(written)`` runs on the loop after each batch reached the file;
- every ``sync_every`` bytes a second thread ``fdatasync``-s the file through its own
  descriptor, in the background, so a final fsync finds little left to write;
- a write error is kept and raised by the next ``write``/``drain``; ``settle`` waits for the
  thread without raising (cleanup paths); ``close`` never waits: each thread closes its
  descriptor after the work it already took.

Use it from one event loop (the one it was created on). BlobWriter is its only user.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from regcore.digest import Hasher

BATCH = 1 << 20  # bytes handed to the thread at once, about
LINGER = 0.002  # seconds a pending chunk may wait for a batch to fill
IN_FLIGHT = 8 << 20  # default bound on bytes accepted but not yet written
SYNC_EVERY = 16 << 20  # default background fdatasync step


class WritePipeline:
    """A pipelined BlobWriter's queue: batches written and hashed in order on one thread.

    Counters (``written``, ``accepted``) are kept on the event loop; the thread touches only
    the file and the hasher, which the loop reads only after :meth:`drain`.
    """

    def __init__(
        self,
        fd: int,
        hasher: Hasher,
        max_in_flight: int,
        on_written: Callable[[int], None] | None,
        sync_every: int,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blobwriter")
        self._sync_every = sync_every
        self._syncer: ThreadPoolExecutor | None = None  # background fdatasync, on its own fd
        self._sync_fd = -1
        self._syncing = False
        self._synced = hasher.size
        self._fd = fd
        self._hasher = hasher
        self._max_in_flight = max(max_in_flight, 1)
        self._on_written = on_written
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._linger: asyncio.TimerHandle | None = None
        self._in_flight = 0  # handed to the thread, not yet written
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._closed = False
        self.written = hasher.size

    @property
    def accepted(self) -> int:
        return self.written + self._in_flight + self._pending_bytes

    async def write(self, chunk: bytes) -> None:
        self._check()
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= BATCH or not (self.written or self._in_flight):
            self._submit()  # a full batch, or the first bytes (readers wait for them)
        elif self._linger is None:
            self._linger = self._loop.call_later(LINGER, self._linger_over)
        while self._in_flight + self._pending_bytes > self._max_in_flight:
            await self._progress()
            self._check()

    async def settle(self) -> None:
        """Wait until the thread finished every batch it was handed, written or failed (what
        is pending is handed over first, unless closed or failed). Never raises a write
        error: for cleanup paths (a rollback, a client gone) that must not touch the file
        while the thread still writes to it."""
        if self._pending and not self._closed and self._error is None:
            self._submit()
        while self._in_flight:
            await self._progress()

    async def drain(self) -> None:
        self._check()
        if self._pending:
            self._submit()
        while self._in_flight:
            await self._progress()
        self._check()

    def close(self) -> None:
        self._closed = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._pending.clear()
        self._pending_bytes = 0
        self._executor.submit(os.close, self._fd)  # after any batch the thread still holds
        self._executor.shutdown(wait=False)
        if self._syncer is not None:
            self._syncer.submit(os.close, self._sync_fd)
            self._syncer.shutdown(wait=False)
        self._wake()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ValueError("write to a closed BlobWriter")

    def _linger_over(self) -> None:
        self._linger = None
        if self._pending and not self._closed:
            self._submit()

    def _submit(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        batch, size = self._pending, self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        self._in_flight += size
        future = self._loop.run_in_executor(self._executor, self._write, batch)
        future.add_done_callback(functools.partial(self._batch_done, size))

    def _write(self, batch: list[bytes]) -> None:  # on the writer thread
        for chunk in batch:
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view) :]
            self._hasher.update(chunk)

    def _batch_done(self, size: int, future: asyncio.Future[None]) -> None:
        self._in_flight -= size
        exc = None if future.cancelled() else future.exception()
        if future.cancelled() or exc is not None:
            if self._error is None:
                self._error = exc or OSError("blob write abandoned")
        elif not self._closed:
            self.written += size
            if self._on_written is not None:
                self._on_written(self.written)
            if self._sync_every and self.written - self._synced >= self._sync_every:
                self._background_sync()
        self._wake()

    def _background_sync(self) -> None:
        if self._syncing:
            return
        if self._syncer is None:
            self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blobsync")
            self._sync_fd = os.dup(self._fd)
        self._syncing, upto = True, self.written
        future = self._loop.run_in_executor(self._syncer, os.fdatasync, self._sync_fd)
        future.add_done_callback(functools.partial(self._sync_done, upto))

    def _sync_done(self, upto: int, future: asyncio.Future[None]) -> None:
        self._syncing = False
        if not future.cancelled() and future.exception() is None:
            self._synced = upto  # a failure is left to the final fsync to report

    async def _progress(self) -> None:
        if self._waiter is None:
            self._waiter = self._loop.create_future()
        await asyncio.shield(self._waiter)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
