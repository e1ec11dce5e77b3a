"""The writer thread behind a pipelined blob file: queued chunks, or bytes absorbed in place.

:class:`WritePipeline` owns one dedicated thread that writes (``os.pwrite`` at its own running
offset) and hashes a file's bytes in order. Two ways to feed it, in any order:

- :meth:`WritePipeline.write` takes chunks on the event loop and hands them to the thread in
  batches of about :data:`BATCH` bytes (or what is pending once the oldest chunk waited
  :data:`LINGER` seconds; the first bytes go at once), waiting while more than
  ``max_in_flight`` bytes are queued (bounded memory);
- :meth:`WritePipeline.absorb` runs a :class:`Reader` (e.g. a socket) on the thread: each
  piece lands in one of :data:`ABSORB_SLOTS` reusable buffers of :data:`ABSORB_BUFFER` bytes,
  is written from it with ``pwrite`` and hashed from it (a memoryview, no copy) on a second
  thread while the next pieces are received, so receiving, hashing and writing leave the
  event loop entirely and use two cores.

``os.pwrite``, ``recv_into`` and hashlib release the GIL, so the loop goes on meanwhile.
``on_written(written)`` runs on the loop as bytes reach the file: after each batch; during an
absorb, whenever the reader has nothing more for now (before the thread waits) and at least
every :data:`REPORT_STEP` bytes, through ``loop.call_soon_threadsafe`` (at most one queued).
Bytes are reported before they are hashed, never before they are written; once
:meth:`drain`/:meth:`absorb` returned, ``written`` bytes are both written and hashed.
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
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from regcore.digest import Hasher

BATCH = 1 << 20  # bytes handed to the thread at once, about
LINGER = 0.002  # seconds a pending chunk may wait for a batch to fill
IN_FLIGHT = 8 << 20  # default bound on bytes accepted but not yet written
SYNC_EVERY = 16 << 20  # default background fdatasync step
ABSORB_BUFFER = 1 << 20  # one absorb piece (buffer slot): fewer, larger pieces cost less CPU
ABSORB_SLOTS = 4  # pieces received ahead of the hash, at most
REPORT_STEP = 1 << 20  # an absorb reports progress at least this often while bytes flow


_FALLOC_FL_KEEP_SIZE = 1


class Reader(Protocol):
    """What :meth:`WritePipeline.absorb` reads from (called on the writer thread only)."""

    def read_into(self, view: memoryview) -> int:
        """Fill a prefix of ``view`` with what is there now; 0 when nothing is (never
        blocks). Raises to end the absorb (a cut connection, a short stream)."""
        ...

    def wait(self) -> None:
        """Block until :meth:`read_into` has something (or will raise). Raises
        ``TimeoutError`` when nothing came in time."""
        ...


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
        self._slots: list[memoryview] | None = None  # absorb's piece buffers, allocated once
        self._hash_thread: ThreadPoolExecutor | None = None
        self._absorb_base = 0  # ``written`` when the running absorb started
        self._absorbed = 0  # bytes the running absorb wrote (set by the thread)
        self._report_queued = False
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
        """Read ``count`` bytes from ``reader`` on the writer thread, writing and hashing each
        piece in place (after whatever was queued before). Returns ``count``.

        What was read before the reader raised (a cut connection, a timeout, a short stream)
        is written, hashed and counted in ``written``; the reader's error is then raised here
        (it is not kept: the pipeline goes on). A write error (``OSError``) is kept like any
        other. Cancelled: ``interrupt()`` is called (it must make a waiting reader return or
        raise soon, e.g. ``socket.shutdown``) and the thread's work is waited for before the
        cancellation goes on, so the caller may then close what the reader reads from.
        """
        await self.drain()
        if count <= 0:
            return 0
        self._absorb_base, self._absorbed = self.written, 0
        self._in_flight = count  # ``accepted`` stays an upper bound while the thread reads
        job = self._loop.run_in_executor(self._executor, self._absorb, reader, count)
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            if interrupt is not None:
                interrupt()
            await _outlast(job)
            raise
        finally:
            self._in_flight = 0
            self._advance(self._absorb_base + self._absorbed)
            self._wake()
        return count

    def close(self) -> None:
        self._closed = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._pending.clear()
        self._pending_bytes = 0
        self._executor.submit(os.close, self._fd)  # after any batch the thread still holds
        self._executor.shutdown(wait=False)
        if self._hash_thread is not None:
            self._hash_thread.shutdown(wait=False)
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

    def _absorb(self, reader: Reader, count: int) -> None:
        """Receive and write here; hash on a second thread, piece by piece, from a ring of
        :data:`ABSORB_SLOTS` buffers (the hash is the longest step: it overlaps the rest)."""
        if self._slots is None:
            self._slots = [memoryview(bytearray(ABSORB_BUFFER)) for _ in range(ABSORB_SLOTS)]
            self._hash_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blobhash")
        assert self._hash_thread is not None
        free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        for slot in self._slots:
            free.put(slot)
        todo: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
        hashing = self._hash_thread.submit(self._hash_pieces, todo, free)
        try:
            self._receive(reader, count, free, todo)
        finally:
            todo.put(None)
            hashing.result()  # every written piece is hashed before the absorb ends

    def _receive(
        self,
        reader: Reader,
        count: int,
        free: queue.SimpleQueue[memoryview],
        todo: queue.SimpleQueue[tuple[memoryview, int] | None],
    ) -> None:
        left, unreported = count, 0
        slot: memoryview | None = None
        while left and not self._closed:
            if slot is None:
                slot = free.get()  # waits while the hash is ABSORB_SLOTS pieces behind
            want = min(left, ABSORB_BUFFER)
            n = reader.read_into(slot[:want])
            failed: BaseException | None = None
            while 0 < n < want:  # fill the slot with what is there: fewer, larger pieces
                try:
                    more = reader.read_into(slot[n:want])
                except Exception as exc:  # keep what came before it; raise after writing
                    failed = exc
                    break
                if more <= 0:
                    break
                n += more
            if n <= 0:
                if unreported:  # the reader is ahead of the bytes: let readers catch up
                    self._report()
                    unreported = 0
                reader.wait()
                continue
            piece = slot[:n]
            try:
                self._pwrite(piece)
            except OSError as exc:
                self._error = exc  # kept, unlike the reader's errors; read after the job ended
                raise
            todo.put((slot, n))
            slot = None
            left -= n
            self._absorbed = count - left
            unreported += n
            if unreported >= REPORT_STEP:  # readers may send these while they are hashed
                self._report()
                unreported = 0
            if failed is not None:
                raise failed
        if left:
            raise OSError("blob write abandoned")

    def _hash_pieces(
        self,
        todo: queue.SimpleQueue[tuple[memoryview, int] | None],
        free: queue.SimpleQueue[memoryview],
    ) -> None:  # on the hash thread
        while (item := todo.get()) is not None:
            slot, n = item
            self._hasher.update(slot[:n])
            free.put(slot)

    def _report(self) -> None:
        if not self._report_queued:
            self._report_queued = True
            try:
                self._loop.call_soon_threadsafe(self._reported)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                pass

    # -- back on the loop ------------------------------------------------------------------------
    def _reported(self) -> None:
        self._report_queued = False  # before reading: a newer report queues another call
        if self._in_flight:  # the absorb is still running
            self._advance(self._absorb_base + self._absorbed)

    def _advance(self, written: int) -> None:
        if written <= self.written or self._closed:
            return
        self.written = written
        if self._on_written is not None:
            self._on_written(written)
        if self._sync_every and written - self._synced >= self._sync_every:
            self._background_sync()

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


async def _outlast(job: asyncio.Future[None]) -> None:
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
