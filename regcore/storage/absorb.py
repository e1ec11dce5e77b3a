"""A body read straight into its blob file off the event loop, its newest bytes readable live.

:class:`Absorber` is the engine behind :meth:`regcore.storage.writepipeline.WritePipeline.absorb`.
Threads share the work of one absorb, so receiving, writing and hashing overlap on
separate cores and the event loop touches no byte:

- **receive** (the pipeline's writer thread): ``recv_into`` one of :data:`SLOTS` reusable
  buffers ("slots") of :data:`PIECE` bytes, waking per :data:`WAKE_BYTES` (not per segment).
  A piece ends at a multiple of :data:`PIECE` in the file, so every piece but an absorb's
  first and last is aligned for direct I/O.
- **write** (:data:`WRITERS` threads, so the disk always has the next piece): each complete
  piece goes to the file with ``pwrite``, through a second descriptor opened with
  ``O_DIRECT`` when the filesystem allows it (``direct_path``): the bytes go from the slot to
  the disk without a page-cache copy, which is what a cold fill spends most of its CPU on
  otherwise (and on some virtual machines, first-touch page-cache pages cost ten times the
  copy). Unaligned pieces, and everything where ``O_DIRECT`` is refused, use the ordinary
  descriptor. ``written`` advances over the pieces written without a gap.
  The pieces of an absorb's last :data:`SLOTS` x :data:`PIECE` bytes are written through
  the page cache even so: readers still sending them when the absorb ends (and the window
  goes) find them there instead of reading the disk from the event loop.
- **hash**: the hasher sees every piece in order, from the slot (a memoryview, no copy).

**Live bytes.** While a piece is in a slot, readers on the event loop can have its bytes
from memory (:meth:`Absorber.locate`): a waiter keeping up with the fill is served from the
slots without the file (nor the page cache) in between. The loop keeps the newest
:data:`LIVE_PIECES` complete pieces (and the one being received) readable; an older piece is
let go once it is in the file (and no reader still needs it, see hold-back), so a reader
behind the window reads the file. Invariant, on the loop: bytes before the window's first
piece are in the file; bytes from there to :attr:`Absorber.received` are in slots.

**Hold-back.** A reader a few milliseconds behind (the loop had the core, not the client's
socket) would otherwise fall out of the window and read the rest from the file, which
``O_DIRECT`` left out of the page cache: a disk read per piece, slower than the fill, so it
never catches up (measured: a cold 200 MiB client took 0.45-0.57 s instead of 0.25-0.30 s in
the runs where it fell behind). So with :attr:`Absorber.need` set (where the readers in the
window are, on the loop), the loop keeps a piece live while a reader still needs it: the fill
waits for its readers, like a plain copy loop would. Only briefly: when the receiver
waits :data:`HOLD_GRACE` for a slot, hold-back ends for the rest of the absorb and readers
behind the window read the file (a slow client never holds the fill back for long). Call
:meth:`Absorber.readers_moved` when a reader moved on. Each retire asks ``need`` once and
lets pieces go only up to its answer, and whatever else lets a piece go (a write, a piece
complete, hold-back's end) the threads report, which retires again: so while a reader is
still at the place ``need`` last answered, the call may be skipped, since what it would let
go the next report does (:meth:`edge.fillplaces.ReaderPlaces._moved` skips it).

A slot is reused only when its write thread, the hash thread and the loop are all done with
it (three holds). ``on_progress(readable, written)`` runs on the loop as bytes arrive
(at least every :data:`REPORT_STEP` bytes, and whenever the receiver is about to wait) and as
they reach the file; at most one such call is queued at a time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import mmap
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from regcore.digest import Hasher

PIECE = 2 << 20  # one slot; pieces end at multiples of this in the file
SLOTS = 4  # buffers per absorber (memory: SLOTS x PIECE, allocated at the first absorb)
LIVE_PIECES = 1  # complete pieces kept readable from memory behind the one being received
ALIGN = 4096  # O_DIRECT offset, length and memory alignment
REPORT_STEP = 1 << 20  # received bytes between progress reports while bytes flow
WAKE_BYTES = 256 << 10  # the receiver waits for this much (or the piece's rest) at once
WRITERS = 2  # direct writes in flight at once (one at a time leaves the disk idle between)
HOLD_GRACE = 0.05  # seconds the receiver waits for a slot a reader holds before letting go
_HOLDS = 3  # a write thread, the hash thread, the event loop


class Reader(Protocol):
    """What an absorb reads from (called on the receive thread only)."""

    def read_into(self, view: memoryview) -> int:
        """Fill a prefix of ``view`` with what is there now; 0 when nothing is (never
        blocks). Raises to end the absorb (a cut connection, a short stream)."""
        ...

    def wait(self, want: int = 1) -> None:
        """Block until :meth:`read_into` has something (or will raise); a reader may wait
        until ``want`` bytes are there (fewer wake-ups), though never for more than the rest
        of the body. Raises ``TimeoutError`` when nothing came in time."""
        ...


class _Slot:
    """One piece buffer: page-aligned anonymous memory (``O_DIRECT`` needs the alignment)."""

    __slots__ = ("buf", "cap", "holds", "size", "start", "view")

    def __init__(self) -> None:
        self.buf = mmap.mmap(-1, PIECE)
        self.view = memoryview(self.buf)
        self.start = 0  # file offset of the piece
        self.cap = 0  # bytes the piece will have
        self.size = 0  # bytes received so far (set by the receive thread only)
        self.holds = 0


class Absorber:
    """Slots, threads and the live window of one file's absorbs (see the module docstring).

    Built on the event loop; :meth:`run` runs on the receive thread; :meth:`locate`,
    :meth:`finish` and the progress callback on the loop. ``direct_path`` is the file to
    open again with ``O_DIRECT`` (None: never).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        hasher: Hasher,
        on_progress: Callable[[int, int], None],
        direct_path: str | None = None,
    ) -> None:
        self._loop = loop
        self._fd = fd
        self._hasher = hasher
        self._on_progress = on_progress
        self._direct_path = direct_path
        self._direct_fd = -1
        self._direct_ok = True
        self._writers: ThreadPoolExecutor | None = None
        self._done_writes: dict[int, int] = {}  # pieces written ahead of a gap: start -> end
        self._slots: list[_Slot] = []
        self._free: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._hash: ThreadPoolExecutor | None = None
        self._pieces: collections.deque[_Slot] = collections.deque()  # the live window
        self._report_queued = False
        self._holding = True  # hold-back still on for this absorb (off: HOLD_GRACE ran out)
        self._cached_from = 0  # pieces ending past this offset skip O_DIRECT
        self.need: Callable[[int], int | None] | None = None
        """On the loop: the lowest offset from the given one on that a reader still has to
        send (None: no reader there)."""
        self.closed = False
        self.write_error: OSError | None = None  # a write failed: the absorb ends
        # set by the threads, read anywhere (plain ints: atomic under the GIL)
        self.received = 0  # file offset up to which bytes were received
        self.written = 0  # file offset up to which the absorb's bytes are in the file
        self.direct_writes = 0  # pieces written with O_DIRECT
        self.holdbacks_ended = 0  # absorbs whose hold-back ran out of HOLD_GRACE

    # -- the receive thread ---------------------------------------------------------------
    def run(self, reader: Reader, start: int, count: int) -> int:
        """Receive ``count`` bytes for file offsets ``start..``; returns the bytes written.

        What was received before the reader raised is written and hashed, then the reader's
        error is raised. A write error (``OSError``, also kept in :attr:`write_error`) ends
        the absorb and is raised once every write and the hash caught up."""
        self._setup()
        assert self._hash is not None
        self.received = self.written = start
        self._done_writes.clear()
        self._holding = True
        self._cached_from = start + count - SLOTS * PIECE  # the last window: page cache
        to_hash: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
        hashing = self._hash.submit(self._hash_pieces, to_hash)
        writes: list[Future[None]] = []
        try:
            self._receive(reader, start, count, to_hash, writes)
        finally:
            to_hash.put(None)
            for write in writes:  # every piece handed on is written (or failed) ...
                write.result()
            hashing.result()  # ... and hashed before the absorb ends
            self._report()
        if self.write_error is not None:
            raise self.write_error
        return self.written - start

    def _receive(
        self,
        reader: Reader,
        pos: int,
        count: int,
        to_hash: queue.SimpleQueue[_Slot | None],
        writes: list[Future[None]],
    ) -> None:
        end, reported = pos + count, pos
        slot: _Slot | None = None
        try:
            while pos < end and not self.closed and self.write_error is None:
                if slot is None:
                    slot = self._take()
                    slot.start, slot.size, slot.holds = pos, 0, _HOLDS
                    slot.cap = min(end - pos, PIECE - pos % PIECE)
                    self._pieces.append(slot)  # thread-safe; the loop only reads and pops left
                n = reader.read_into(slot.view[slot.size : slot.cap])
                if n <= 0:
                    if pos > reported:  # readers catch up while the socket is empty
                        self._report()
                        reported = pos
                    reader.wait(min(slot.cap - slot.size, WAKE_BYTES))
                    continue
                slot.size += n
                pos += n
                self.received = pos
                if slot.size == slot.cap:
                    done, slot = slot, None
                    self._hand_on(done, to_hash, writes)
                if pos - reported >= REPORT_STEP:
                    self._report()
                    reported = pos
        finally:
            if slot is not None:  # what came before an error is written and hashed
                if slot.size:
                    self._hand_on(slot, to_hash, writes)
                else:
                    self._drop(slot, 2)  # never handed on; the loop drops its own hold
        if pos < end and self.write_error is None:
            raise OSError("blob write abandoned")

    def _take(self) -> _Slot:
        """A free slot; waits while the writes, the hash or the loop hold them all. A wait
        longer than :data:`HOLD_GRACE` ends hold-back: the loop lets its window go."""
        if not self._holding:
            return self._free.get()
        try:
            return self._free.get(timeout=HOLD_GRACE)
        except queue.Empty:
            self._holding = False
            self.holdbacks_ended += 1
            self._report()
            return self._free.get()

    def _hand_on(
        self, slot: _Slot, to_hash: queue.SimpleQueue[_Slot | None], writes: list[Future[None]]
    ) -> None:
        """A received piece goes to a write thread and, in order, to the hash thread."""
        assert self._writers is not None
        to_hash.put(slot)
        writes.append(self._writers.submit(self._write_piece, slot))

    # -- writing and hashing ----------------------------------------------------------------------
    def _write_piece(self, slot: _Slot) -> None:  # on a write thread
        """Write one piece; ``written`` advances over the pieces written without a gap."""
        try:
            if self.write_error is None:
                self._write(slot)
                with self._lock:
                    self._done_writes[slot.start] = slot.start + slot.size
                    while self.written in self._done_writes:
                        self.written = self._done_writes.pop(self.written)
                self._report()
        except OSError as exc:
            if self.write_error is None:
                self.write_error = exc
            self._report()  # the loop lets the window go: the receiver is not left waiting
        finally:
            self._drop(slot)

    def _write(self, slot: _Slot) -> None:
        view, offset = slot.view[: slot.size], slot.start
        aligned = slot.size - slot.size % ALIGN if offset % ALIGN == 0 else 0
        if offset + slot.size > self._cached_from:
            aligned = 0  # the absorb's last window: readers may still want it (page cache)
        if aligned and self._direct_fd >= 0 and self._direct_ok:
            try:
                _pwrite_all(self._direct_fd, view[:aligned], offset)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._direct_ok = False  # the filesystem refused the I/O after all: buffered
            else:
                self.direct_writes += 1
                view, offset = view[aligned:], offset + aligned
        if view:
            _pwrite_all(self._fd, view, offset)

    def _hash_pieces(self, todo: queue.SimpleQueue[_Slot | None]) -> None:
        while (slot := todo.get()) is not None:
            try:
                self._hasher.update(slot.view[: slot.size])
            finally:
                self._drop(slot)

    def _drop(self, slot: _Slot, holds: int = 1) -> None:
        with self._lock:
            slot.holds -= holds
            free = slot.holds == 0
        if free:
            self._free.put(slot)

    def _report(self) -> None:
        if not self._report_queued:
            self._report_queued = True
            try:
                self._loop.call_soon_threadsafe(self._reported)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                pass

    # -- the event loop ----------------------------------------------------------------------------
    def _reported(self) -> None:
        self._report_queued = False  # before reading: a newer report queues another call
        self._retire(ended=False)
        self._on_progress(self.received, self.written)

    def locate(self, pos: int, stop: int) -> tuple[memoryview | None, int]:
        """Where bytes ``pos..stop-1`` (``pos`` below the readable end) are, on the loop:
        ``(view, 0)`` with the live bytes from ``pos`` (at most up to ``stop``; valid until
        the next ``await``), or ``(None, file_stop)``: bytes ``pos..file_stop-1`` are in the
        file."""
        for slot in tuple(self._pieces):  # a snapshot: the receive thread appends
            begin = slot.start
            if begin <= pos < begin + slot.size:
                return slot.view[pos - begin : min(stop, begin + slot.size) - begin], 0
            if pos < begin:
                return None, min(stop, begin)
        return None, stop

    def finish(self) -> None:
        """After :meth:`run` returned (on the loop): let the whole window go."""
        self._retire(ended=True)

    def readers_moved(self) -> None:
        """On the loop: a reader sent more (or left); pieces it held back may go (needed only
        when no reader is left at the place ``need`` last answered, see the module docstring)."""
        self._retire(ended=False)

    def _retire(self, *, ended: bool) -> None:
        pieces = self._pieces
        ended = ended or self.write_error is not None
        need = None
        if self.need is not None and self._holding and not ended and pieces:
            need = self.need(pieces[0].start)
        while pieces:
            oldest = pieces[0]
            if not ended:
                behind = sum(1 for s in tuple(pieces) if s.size == s.cap) - 1
                end = oldest.start + oldest.cap
                if behind < LIVE_PIECES or self.written < end:
                    return
                if need is not None and need < end:
                    return  # a reader still sends from it (until HOLD_GRACE runs out)
            pieces.popleft()
            self._drop(oldest)

    # -- lifetime ------------------------------------------------------------------------------------
    def _setup(self) -> None:
        if self._slots:
            return
        self._slots = [_Slot() for _ in range(SLOTS)]
        for slot in self._slots:
            self._free.put(slot)
        self._hash = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blobhash")
        self._writers = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="blobwrite")
        if self._direct_path is not None and hasattr(os, "O_DIRECT"):
            with contextlib.suppress(OSError):  # EINVAL: tmpfs and others cannot
                self._direct_fd = os.open(self._direct_path, os.O_WRONLY | os.O_DIRECT)

    def _stop_direct(self) -> None:
        fd, self._direct_fd = self._direct_fd, -1
        if fd >= 0:
            os.close(fd)

    def close(self, executor: ThreadPoolExecutor) -> None:
        """Stop (a running :meth:`run` ends at its next piece) and release the hash thread;
        the direct descriptor is closed on ``executor`` (the receive thread's) after the work
        it already took."""
        self.closed = True
        executor.submit(self._stop_direct)  # after run(), which waits for every write
        for pool in (self._hash, self._writers):
            if pool is not None:
                pool.shutdown(wait=False)


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        offset += n
        view = view[n:]
