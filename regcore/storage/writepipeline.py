"""The writer thread behind a pipelined blob file: queued chunks, or bytes absorbed in place.

:class:`WritePipeline` owns one dedicated thread that writes (``os.pwrite`` at its own running
offset) and hashes a file's bytes in order. Two ways to feed it, in any order:

- :meth:`WritePipeline.write` takes chunks on the event loop and hands them to the thread in
  batches of about :data:`BATCH` bytes (or what is pending once the oldest chunk waited
  :data:`LINGER` seconds; the first bytes go at once), waiting while more than
  ``max_in_flight`` bytes are queued (bounded memory);
- :meth:`WritePipeline.absorb` runs a :class:`Reader` (e.g. a socket) on the thread: each
  piece lands in a reusable buffer and is written (``O_DIRECT`` where the filesystem allows,
  given ``direct_path``) and hashed from it on two more threads while the next pieces are
  received, so receiving, hashing and writing leave the event loop entirely and use every
  core; the newest pieces are readable from memory meanwhile (:meth:`WritePipeline.locate`;
  :mod:`regcore.storage.absorb` says how).

``os.pwrite``, ``recv_into`` and hashlib release the GIL, so the loop goes on meanwhile.
``on_written(readable)`` runs on the loop as bytes become readable: after each batch reached
the file; during an absorb, as bytes arrive in memory (:meth:`locate` says where each byte
is) and as they reach the file. Bytes are reported before they are hashed (and during an
absorb before they are written); once :meth:`drain`/:meth:`absorb` returned, ``written``
bytes are both written and hashed.
:meth:`WritePipeline.preallocate` reserves the file's blocks first (``fallocate`` with
``FALLOC_FL_KEEP_SIZE``: the size still grows with the writes), so a full disk fails before
the first byte and writes skip the filesystem's delayed allocation; where the filesystem cannot
(``EOPNOTSUPP``), nothing is reserved. Every ``sync_every`` bytes a second thread
``fdatasync``-s the file through its own descriptor, in the background, so a final fsync finds
little left to write. A write error is kept and raised by the next ``write``/``drain``/
``absorb``; ``settle`` waits for the thread without raising (cleanup paths); ``close`` never
waits: the thread closes the descriptor after the work it already took. One event loop only.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from regcore.digest import Hasher
from regcore.storage.absorb import Absorber, Reader

BATCH = 1 << 20  # bytes handed to the thread at once, about
LINGER = 0.002  # seconds a pending chunk may wait for a batch to fill
IN_FLIGHT = 8 << 20  # default bound on bytes accepted but not yet written
SYNC_EVERY = 16 << 20  # default background fdatasync step


_FALLOC_FL_KEEP_SIZE = 1


class WritePipeline:
    """A file's writer thread; see the module docstring.

    Counters (``written``, ``accepted``) are kept on the event loop; the thread touches only
    the file, the hasher and its own offset, which the loop reads only when the thread is idle.
    """

    def __init__(
        self,
        fd: int,
        hasher: Hasher,
        max_in_flight: int,
        on_written: Callable[[int], None] | None,
        sync_every: int,
        direct_path: str | None = None,
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
        self._pos = hasher.size  # the thread's file offset
        self._max_in_flight = max(max_in_flight, 1)
        self._on_written = on_written
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._linger: asyncio.TimerHandle | None = None
        self._in_flight = 0  # handed to the thread, not yet written
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._direct_path = direct_path
        self._absorber: Absorber | None = None  # threads and slots of absorb(), made once
        self._need: Callable[[int], int | None] | None = None  # see follow()
        self.written = hasher.size
        self._readable = hasher.size  # reported to on_written: in the file, or live

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

    def preallocate(self, size: int) -> None:
        """Reserve ``size`` bytes of disk for the file, on the thread before anything queued
        after this call. No room (``ENOSPC``) is kept as a write error; a filesystem that
        cannot reserve changes nothing."""
        future = self._loop.run_in_executor(self._executor, _fallocate, self._fd, size)
        future.add_done_callback(self._preallocated)

    def _preallocated(self, future: asyncio.Future[None]) -> None:
        exc = None if future.cancelled() else future.exception()
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and self._error is None:
            self._error = exc

    async def absorb(
        self, reader: Reader, count: int, *, interrupt: Callable[[], None] | None = None
    ) -> int:
        """Read ``count`` bytes from ``reader`` off the event loop, writing and hashing them
        in place (after whatever was queued before; :class:`regcore.storage.absorb.Absorber`).
        Returns ``count``. While it runs, the newest bytes are readable from memory
        (:meth:`locate`) and ``on_written`` reports them as they arrive.

        What was read before the reader raised (a cut connection, a timeout, a short stream)
        is written, hashed and counted in ``written``; the reader's error is then raised here
        (it is not kept: the pipeline goes on). A write error (``OSError``) is kept like any
        other. Cancelled: ``interrupt()`` is called (it must make a waiting reader return or
        raise soon, e.g. ``socket.shutdown``) and the threads' work is waited for before the
        cancellation goes on, so the caller may then close what the reader reads from.
        """
        await self.drain()
        if count <= 0:
            return 0
        if self._absorber is None:
            self._absorber = Absorber(
                self._loop, self._fd, self._hasher, self._absorbing, self._direct_path
            )
            self._absorber.need = self._need
        absorber = self._absorber
        self._in_flight = count  # ``accepted`` stays an upper bound while the threads work
        job = self._loop.run_in_executor(self._executor, absorber.run, reader, self._pos, count)
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            if interrupt is not None:
                interrupt()
            await outlast(job)
            raise
        finally:
            self._in_flight = 0
            self._pos = absorber.written  # the threads are done: the offset is ours again
            absorber.finish()
            if absorber.write_error is not None and self._error is None:
                self._error = absorber.write_error
            self._advance(absorber.written)
            self._wake()
        self._check()
        return count

    def locate(self, pos: int, stop: int) -> tuple[memoryview | None, int]:
        """Where readable bytes ``pos..stop-1`` are (on the loop): ``(view, 0)``, live bytes
        from ``pos`` in memory (valid until the next ``await``), or ``(None, file_stop)``:
        bytes ``pos..file_stop-1`` are in the file. See :meth:`Absorber.locate`."""
        if self._absorber is None or not self._in_flight:
            return None, stop
        return self._absorber.locate(pos, stop)

    def follow(self, need: Callable[[int], int | None]) -> None:
        """Readers of the live bytes: ``need(floor)`` (on the loop) is the lowest offset from
        ``floor`` on that one of them still has to send, None when there is none; an absorb holds those bytes in
        memory a little while for them (hold-back, see :mod:`regcore.storage.absorb`)."""
        self._need = need
        if self._absorber is not None:
            self._absorber.need = need

    def readers_moved(self) -> None:
        """On the loop: a reader of :meth:`follow` sent more or left."""
        if self._absorber is not None and self._in_flight:
            self._absorber.readers_moved()

    @property
    def holdbacks_ended(self) -> int:
        """Absorbs so far whose hold-back ran out (a reader too slow to wait for)."""
        return self._absorber.holdbacks_ended if self._absorber is not None else 0

    @property
    def direct_writes(self) -> int:
        """Pieces an absorb wrote with ``O_DIRECT`` so far."""
        return self._absorber.direct_writes if self._absorber is not None else 0

    def close(self) -> None:
        self._closed = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._pending.clear()
        self._pending_bytes = 0
        if self._absorber is not None:
            self._absorber.close(self._executor)
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

    # -- on the writer thread -----------------------------------------------------------------
    def _write(self, batch: list[bytes]) -> None:
        for chunk in batch:
            self._pwrite(memoryview(chunk))
            self._hasher.update(chunk)

    def _pwrite(self, view: memoryview) -> None:
        while view:
            n = os.pwrite(self._fd, view, self._pos)
            self._pos += n
            view = view[n:]

    # -- back on the loop ------------------------------------------------------------------------
    def _absorbing(self, received: int, written: int) -> None:
        if self._in_flight:  # the absorb is still running
            self._advance(written, readable=received)

    def _advance(self, written: int, readable: int = 0) -> None:
        if self._closed:
            return
        if written > self.written:
            self.written = written
            if self._sync_every and written - self._synced >= self._sync_every:
                self._background_sync()
        readable = max(readable, self.written)
        if readable > self._readable:
            self._readable = readable
            if self._on_written is not None:
                self._on_written(readable)

    def _batch_done(self, size: int, future: asyncio.Future[None]) -> None:
        self._in_flight -= size
        exc = None if future.cancelled() else future.exception()
        if future.cancelled() or exc is not None:
            if self._error is None:
                self._error = exc or OSError("blob write abandoned")
        else:
            self._advance(self.written + size)
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


async def outlast(job: asyncio.Future[Any]) -> None:
    """Wait until ``job`` (a thread's work) ended, whatever cancellations arrive meanwhile;
    its outcome is retrieved and dropped."""
    while not job.done():
        try:
            await asyncio.wait([job])
        except asyncio.CancelledError:
            continue
    if not job.cancelled():
        job.exception()


def _fallocate(fd: int, size: int) -> None:
    """``fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, size)``; raises OSError(ENOSPC) only."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.fallocate
    except (OSError, AttributeError):  # not glibc/Linux: nothing to reserve with
        return
    call.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    if size > 0 and call(fd, _FALLOC_FL_KEEP_SIZE, 0, size) != 0:
        code = ctypes.get_errno()
        if code == errno.ENOSPC:
            raise OSError(code, os.strerror(code))
