"""One blob being filled on this node: its state machine and the waiters' view of it.

A :class:`Fill` is shared by every request for its digest on the node. Its state changes only
through the fill-side methods, called by the one task that runs the fill
(:class:`edge.fillrun.FillRun`, through the :class:`FillSink` protocol)::

    PENDING --announce(total)--> ANNOUNCED --open(total, path)--> STREAMING --commit(blob)--> COMMITTED
       |                             |                               | advance(written)
       +-----------------------------+-------------------------------+--fail(exc)--> FAILED

- ``announce``: the source said the size (``announced()`` resolves); no byte is promised yet.
- ``open``: the size is reserved in the cache and bytes go to ``path`` (``size()`` resolves);
  ``live`` (the staged blob's ``locate``) says which of the readable bytes are still only in
  memory (the fill's newest pieces, see :mod:`regcore.storage.absorb`).
- ``advance(readable)``: bytes ``0..readable-1`` are in the file or live (readers wake).
  Ignored once the fill is finished (a late progress report after a failure changes nothing).
- ``commit``: verified and committed; ``fail``: every reader gets the error, nothing cached.
A transition out of order raises ``RuntimeError`` (a bug in the caller, never a runtime
condition). Use from one event loop.

While streaming, the fill knows where each reader is (to :data:`LIVE_SPAN`) and tells
``followed`` (the staged blob): ``need(floor)``, the lowest place from ``floor`` on, is a
bisection of the places kept sorted (O(log readers)), and ``readers_moved()`` is signalled
only when the last reader at the place ``need`` last answered moves on or leaves (no other
move can let a held piece go, see :meth:`Fill._moved`): in a herd, readers ahead of the
slowest one move without waking the absorb. That bookkeeping is :mod:`edge.fillplaces`.

Waiter API: :meth:`Fill.announced`, :meth:`Fill.size`, :meth:`Fill.spans` (with
:meth:`Fill.locate` for each span's bytes), :meth:`Fill.read`, :meth:`Fill.result` and the
properties; the guarantees are stated in :mod:`edge.fill`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

from edge.cache import CachedBlob
from edge.fillplaces import Followed, ReaderPlaces
from regcore import errors
from regcore.digest import Digest

Locate = Callable[[int, int], tuple[memoryview | None, int]]


READ_CHUNK = 256 * 1024
FINAL_HOLD = 64 * 1024  # bytes at the blob's end withheld from readers until it is committed
LIVE_SPAN = 1 << 20  # while streaming, spans end this far on: a reader's place is known to 1 MiB
_INLINE_READ = 64 * 1024


class FillFailed(errors.UpstreamUnavailable):  # type: ignore[misc,valid-type]
    """The fill broke after its size was known: the response must be cut short."""

    message = "blob transfer from upstream failed"


class FillState(enum.Enum):
    PENDING = "pending"
    ANNOUNCED = "announced"
    STREAMING = "streaming"
    COMMITTED = "committed"
    FAILED = "failed"


class FillSink(Protocol):
    """What the task running a fill may do to it (see the module docstring)."""

    digest: Digest
    source: str

    def announce(self, total: int) -> None: ...
    def open(
        self, total: int, path: Path, live: Locate | None = None, followed: Followed | None = None
    ) -> None: ...
    def advance(self, written: int) -> None: ...
    def commit(self, blob: CachedBlob) -> None: ...
    def fail(self, exc: BaseException) -> None: ...


class Fill(ReaderPlaces):
    """One blob being filled (or already cached). Shared by every waiter on this node."""

    def __init__(self, digest: Digest) -> None:
        loop = asyncio.get_running_loop()
        self.digest = digest
        self.state = FillState.PENDING
        self._announced: asyncio.Future[int] = loop.create_future()
        self._size: asyncio.Future[int] = loop.create_future()
        self._done: asyncio.Future[CachedBlob] = loop.create_future()
        self._written = 0
        self._path: Path | None = None
        self._live: Locate | None = None
        self._followed: Followed | None = None
        super().__init__()  # the readers' places (edge.fillplaces)
        self._error: FillFailed | None = None
        self._progress = asyncio.Event()
        self.source = ""
        """Where the bytes come from ("upstream", "peer", "cache", ...)."""
        self.readers = 0

    @classmethod
    def completed(cls, blob: CachedBlob) -> Fill:
        fill = cls(blob.digest)
        fill._path = blob.path
        fill._written = blob.size
        fill._announced.set_result(blob.size)
        fill._size.set_result(blob.size)
        fill._done.set_result(blob)
        fill.state = FillState.COMMITTED
        fill.source = "cache"
        return fill

    # -- waiter API -----------------------------------------------------------------------
    @property
    def done(self) -> asyncio.Future[CachedBlob]:
        """The committed blob (or the failure); a shield, so a cancelled awaiter harms no one."""
        return asyncio.shield(self._done)

    @property
    def total(self) -> int | None:
        return self._size.result() if self._size.done() and not self._size.exception() else None

    @property
    def written(self) -> int:
        """Bytes readable now."""
        return self._written

    @property
    def finished(self) -> bool:
        return self._done.done()

    @property
    def failure(self) -> BaseException | None:
        """What :meth:`result` raises once the fill failed (None while running or committed)."""
        return self._done.exception() if self._done.done() else None

    async def announced(self) -> int:
        """The size the source announced, before cache space was reserved for it (no byte is
        promised yet). Raises the fill's error if it failed before the source answered."""
        return await asyncio.shield(self._announced)

    async def size(self) -> int:
        """Total size once known and reserved in the cache; raises the fill's error if it
        failed before that (:class:`edge.fillrun.TooLargeToCache` when it cannot be cached)."""
        return await asyncio.shield(self._size)

    async def result(self) -> CachedBlob:
        """The committed blob; raises FillFailed (or the source's OCI error)."""
        return await asyncio.shield(self._done)

    async def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``start..end`` (inclusive; ``end`` None means to the last byte) as they land,
        in pieces of at most :data:`READ_CHUNK` (the pieces of :meth:`spans`, read).

        Raises RangeInvalid for an unsatisfiable range, FillFailed when the fill fails.
        """
        async with contextlib.aclosing(self.spans(start, end)) as spans:
            async for fd, offset, count in spans:
                stop = offset + count
                while offset < stop:
                    view, file_stop = self.locate(offset, min(stop, offset + READ_CHUNK))
                    if view is not None:
                        data = bytes(view)  # a copy: the view is gone at the next await
                        offset += len(data)
                        yield data
                        continue
                    n = min(READ_CHUNK, file_stop - offset)
                    data = (
                        os.pread(fd, n, offset)
                        if n <= _INLINE_READ
                        else await asyncio.to_thread(os.pread, fd, n, offset)
                    )
                    if len(data) != n:
                        raise FillFailed(f"{self.digest}: file shorter than expected")
                    offset += n
                    yield data

    def locate(self, pos: int, stop: int) -> tuple[memoryview | None, int]:
        """Where the bytes ``pos..stop-1`` of a span from :meth:`spans` are, right now:
        ``(view, 0)``: live bytes from ``pos`` in memory (up to ``stop`` at most), valid only
        until the next ``await`` (send them synchronously, then ask again); or
        ``(None, file_stop)``: bytes ``pos..file_stop-1`` are in the span's file."""
        if self._live is None or self.state is not FillState.STREAMING:
            return None, stop
        return self._live(pos, stop)

    async def spans(
        self, start: int = 0, end: int | None = None
    ) -> AsyncIterator[tuple[int, int, int]]:
        """``(fd, offset, count)``: the bytes of ``start..end`` (inclusive; ``end`` None means
        to the last byte) as they land, as spans of a descriptor of the (growing) file that
        this iterator owns (valid until it is closed). A span's bytes may still be live in
        memory only: :meth:`locate` says which part to take from memory and which to serve
        from the file (``os.sendfile``); :func:`regcore.zerocopy.send_span` does both.

        Spans are contiguous and in order. When the range reaches the blob's last byte, its
        part in the blob's last :data:`FINAL_HOLD` bytes comes only once the fill is verified
        and committed; a range ending earlier is served as bytes land. Raises RangeInvalid for
        an unsatisfiable range, FillFailed when the fill fails.
        """
        total = await self.size()
        last = total - 1 if end is None else min(end, total - 1)
        if start < 0 or (total > 0 and start > last) or (total == 0 and start > 0):
            raise errors.RangeInvalid(f"bytes {start}-{end} of {total}")
        if total == 0:
            await self.result()
            return
        fd = await self._open()
        self.readers += 1
        me = object()
        try:
            pos, stop = start, last + 1
            tail = total - FINAL_HOLD if stop == total else stop  # held until the commit
            while pos < stop:
                upto = min(await self._wait_beyond(pos), stop)
                if upto > tail and not self._done.done():
                    if pos < tail:
                        upto = tail
                    else:
                        await self.result()
                        upto = stop  # committed: every byte is in the file
                if self._followed is not None:
                    upto = min(upto, pos + LIVE_SPAN)
                    self._place(me, pos)
                yield fd, pos, upto - pos
                pos = upto
                self._moved(me, pos)
        finally:
            self.readers -= 1
            self._moved(me, None)
            os.close(fd)

    # -- fill side (FillSink) ---------------------------------------------------------------
    def announce(self, total: int) -> None:
        """The source said the blob has ``total`` bytes (PENDING -> ANNOUNCED)."""
        self._move(FillState.PENDING, FillState.ANNOUNCED)
        self._announced.set_result(total)

    def open(
        self, total: int, path: Path, live: Locate | None = None, followed: Followed | None = None
    ) -> None:
        """``total`` bytes are reserved and will land in ``path`` (ANNOUNCED -> STREAMING);
        ``live`` locates readable bytes that are not in the file yet; ``followed`` (their
        owner) is told where the readers are."""
        self._move(FillState.ANNOUNCED, FillState.STREAMING)
        self._path = path
        self._live = live
        if followed is not None:
            self._followed = followed
            followed.follow(self._need)
        self._size.set_result(total)

    def advance(self, written: int) -> None:
        """Bytes ``0..written-1`` are readable, in the file or live (STREAMING); ignored
        once finished."""
        if self.state in (FillState.COMMITTED, FillState.FAILED):
            return
        if self.state is not FillState.STREAMING:
            raise RuntimeError(f"fill {self.digest}: bytes before the size was reserved")
        self._publish(written)

    def commit(self, blob: CachedBlob) -> None:
        """Verified and committed (STREAMING -> COMMITTED): readers get the last bytes."""
        self._move(FillState.STREAMING, FillState.COMMITTED)
        self._path = blob.path
        self._live = self._followed = None
        self._done.set_result(blob)
        self._publish(blob.size)

    def fail(self, exc: BaseException) -> None:
        """The fill failed (any unfinished state -> FAILED): every reader gets the error.

        Before the size was known the source's OCI error reaches waiters as it is; after
        that, a :class:`FillFailed` (the response is already under way).
        """
        if self.state in (FillState.COMMITTED, FillState.FAILED):
            raise RuntimeError(f"fill {self.digest}: fail() after {self.state.value}")
        self.state = FillState.FAILED
        self._live = self._followed = None
        failed = (
            exc if isinstance(exc, FillFailed) else FillFailed(f"{self.digest}: {describe(exc)}")
        )
        if failed is not exc:
            failed.__cause__ = exc
        self._error = failed
        early: BaseException = failed
        if not self._size.done():  # no byte promised yet: pass OCI errors on as they are
            early = exc if isinstance(exc, errors.RegistryError) else failed
            if not self._announced.done():
                self._announced.set_exception(early)
                self._announced.exception()  # mark retrieved
            self._size.set_exception(early)
            self._size.exception()
        self._done.set_exception(early)
        self._done.exception()
        self._publish(self._written)

    # -- internals ----------------------------------------------------------------------------
    def _move(self, expected: FillState, to: FillState) -> None:
        if self.state is not expected:
            raise RuntimeError(
                f"fill {self.digest}: {to.value} while {self.state.value} "
                f"(expected {expected.value})"
            )
        self.state = to

    def _publish(self, written: int) -> None:
        self._written = written
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def _wait_beyond(self, pos: int) -> int:
        while True:
            if self._error is not None:
                raise self._error
            if self._written > pos:
                return self._written
            await self._progress.wait()

    async def _open(self) -> int:
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                return os.open(self._path, os.O_RDONLY)
        blob = await self.result()  # temp file renamed (committed) or removed (failed)
        try:
            return os.open(blob.path, os.O_RDONLY)
        except FileNotFoundError:
            raise FillFailed(f"{self.digest}: evicted before it could be read") from None


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
