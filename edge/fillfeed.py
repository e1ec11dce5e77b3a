"""A body received on the event loop, handed to the fill's threads as if it came from a socket.

A TLS upstream's bytes must pass the SSL object that lives in the loop's transport, and an
in-process source yields bytes on the loop too: such bodies cannot be read by the fill's own
thread (:mod:`edge.fillsocket`). :class:`ChunkFeed` lets them take the same path anyway: the
loop puts each chunk in the feed, and the absorb's receive thread
(:class:`regcore.storage.absorb.Absorber`) reads the feed as its :class:`Reader`, so the
pieces are written (``O_DIRECT`` where possible), hashed on another thread and served live to
waiters exactly as a socket body's are.

- :meth:`ChunkFeed.put` (loop) queues a chunk (by reference: ``bytes`` are immutable) and
  waits while more than ``limit`` bytes are queued (bounded memory), or until ``stop`` is done
  (the absorb ended early: a write error);
- :meth:`ChunkFeed.end` (loop): no more chunks; if the receive thread wants more than came,
  it gets :class:`edge.sources.ShortStream` (the fill resumes by ``Range``);
- :meth:`ChunkFeed.fail` (loop, or ``interrupt`` from a cancelled absorb): the receive thread
  gets the error once it has read what was queued before it;
- :meth:`ChunkFeed.read_into` / :meth:`ChunkFeed.wait` (receive thread): copy out what is
  queued; wait for more (``TimeoutError`` after ``timeout`` seconds without a chunk; the
  loop's own read timeout normally fires first).

:func:`feed` runs one body through a feed into a staged blob's ``absorb``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterator

from prometheus_client import Counter

from edge.sources import ShortStream
from regcore import errors
from regcore.storage.interfaces import StagedBlob
from regcore.storage.writepipeline import outlast

WAIT_TIMEOUT = 300.0  # seconds the receive thread waits for the loop's next chunk, at most


class ChunkFeed:
    """Chunks from the loop to one absorb's receive thread; see the module docstring."""

    def __init__(self, limit: int, *, timeout: float = WAIT_TIMEOUT) -> None:
        self._loop = asyncio.get_running_loop()
        self._limit = max(1, limit)
        self._timeout = timeout
        self._cond = threading.Condition()
        self._chunks: collections.deque[memoryview] = collections.deque()
        self._queued = 0
        self._ended = False
        self._error: BaseException | None = None
        self._space: asyncio.Event | None = None  # set when the thread made room (loop waits)

    # -- the loop ----------------------------------------------------------------------------------
    async def put(self, chunk: bytes, stop: asyncio.Future[object]) -> None:
        """Queue ``chunk``; wait while more than ``limit`` bytes are queued, unless ``stop``
        is done (then return at once: the reader is gone)."""
        if not chunk:
            return
        with self._cond:
            self._chunks.append(memoryview(chunk))
            self._queued += len(chunk)
            self._cond.notify()
            full = self._queued > self._limit
            if full:
                self._space = asyncio.Event()
        while full and not stop.done():
            space = self._space
            assert space is not None
            waiter = asyncio.ensure_future(space.wait())
            try:
                await asyncio.wait([waiter, stop], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            with self._cond:
                full = self._queued > self._limit
                if full and space.is_set():
                    self._space = asyncio.Event()

    def end(self) -> None:
        """No more chunks will come."""
        with self._cond:
            self._ended = True
            self._cond.notify()

    def fail(self, exc: BaseException) -> None:
        """The body broke (or the absorb is cancelled): the reader raises ``exc`` once the
        chunks queued before are read. Any thread."""
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify()

    def interrupt(self) -> None:
        """For a cancelled absorb: the receive thread stops at once."""
        with self._cond:
            self._chunks.clear()
            self._queued = 0
        self.fail(asyncio.CancelledError("fill cancelled"))

    # -- the receive thread -----------------------------------------------------------------------
    def read_into(self, view: memoryview) -> int:
        """Copy queued bytes into ``view``; 0 when none are queued yet (never blocks).
        Raises the error given to :meth:`fail`, or ShortStream after :meth:`end`, once
        nothing queued is left."""
        n, want = 0, len(view)
        with self._cond:
            chunks = self._chunks
            while n < want and chunks:
                head = chunks[0]
                k = min(len(head), want - n)
                view[n : n + k] = head[:k]
                n += k
                if k == len(head):
                    chunks.popleft()
                else:
                    chunks[0] = head[k:]
            self._queued -= n
            if not n and not chunks:
                if self._error is not None:
                    raise self._error
                if self._ended:
                    raise ShortStream("the body ended before its announced size")
            space = self._space
            if space is not None and self._queued <= self._limit:
                self._space = None
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    self._loop.call_soon_threadsafe(space.set)
        return n

    def wait(self, want: int = 1) -> None:
        """Block until a chunk is queued, or the feed ended or failed (``want`` is a hint
        for sockets; chunks arrive as the loop has them)."""
        with self._cond:
            ready = self._cond.wait_for(
                lambda: self._chunks or self._ended or self._error is not None, self._timeout
            )
        if not ready:
            raise TimeoutError(f"no byte from the loop for {self._timeout:g} s")


async def feed(
    writer: StagedBlob,
    chunks: AsyncIterator[bytes],
    count: int,
    *,
    limit: int,
    total: int,
    counter: Counter | None = None,
) -> None:
    """Write the ``count`` remaining bytes of a ``total``-byte body that ``chunks`` yields on
    the loop through ``writer.absorb`` (at most ``limit`` bytes queued; ``counter`` counts
    them). Raises what the chunks raised (after what came before it was written),
    ShortStream when they end early, SizeInvalid when they run long, a write error."""
    if count <= 0:
        async for _chunk in chunks:
            raise errors.SizeInvalid(f"source sent more than {total} bytes")
        return
    pipe = ChunkFeed(limit)
    absorb = asyncio.ensure_future(writer.absorb(pipe, count, interrupt=pipe.interrupt))
    fed = 0
    try:
        async for chunk in chunks:
            if fed + len(chunk) > count:
                raise errors.SizeInvalid(f"source sent more than {total} bytes")
            await pipe.put(chunk, absorb)
            if absorb.done():  # a write error ended it: raised below
                break
            fed += len(chunk)
            if counter is not None:
                counter.inc(len(chunk))
        pipe.end()
    except BaseException as exc:
        pipe.fail(exc)
        await outlast(absorb)  # what came first is written; the writer is the caller's again
        raise
    await absorb
