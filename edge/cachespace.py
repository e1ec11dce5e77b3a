"""Room held in the blob cache for fills in progress: :class:`CacheSpace` and
:class:`Reservation`.

A fill reserves its blob's size before its first byte lands on disk, so committed bytes plus
reservations never exceed the cache bound. :class:`CacheSpace` keeps the reserved total and
wakes waiters whenever bytes are freed (a reservation released, a blob dropped); the policy
that combines it with eviction is :meth:`edge.cache.BlobCache.reserve`.

Not thread-safe: use from one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib

from regcore import errors


class Reservation:
    """Room held in the cache for a blob being written. :meth:`release` is idempotent."""

    __slots__ = ("_space", "released", "size")

    def __init__(self, space: CacheSpace, size: int) -> None:
        self._space = space
        self.size = size
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._space._unreserve(self.size)


class CacheSpace:
    """The reserved byte total of one cache bounded by ``max_bytes``, and its waiters."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._reserved = 0
        self._freed = asyncio.Event()

    @property
    def reserved(self) -> int:
        """Bytes held for fills in progress."""
        return self._reserved

    def check(self, size: int) -> None:
        """Refuse a size no eviction can make room for. Raises SizeInvalid / SizeTooLarge."""
        if size < 0:
            raise errors.SizeInvalid(f"negative size {size}")
        if size > self.max_bytes:
            raise errors.SizeTooLarge(
                f"blob of {size} bytes exceeds the cache size {self.max_bytes}"
            )

    def hold(self, size: int) -> Reservation:
        """Count ``size`` more bytes as reserved (the caller checked that they fit)."""
        self._reserved += size
        return Reservation(self, size)

    def freed(self) -> None:
        """Bytes were freed: wake the waiters of :meth:`wait`."""
        self._freed.set()

    async def wait(self, deadline: float) -> None:
        """Wait until bytes are freed or the loop time reaches ``deadline``. Raises
        :class:`errors.Unavailable` when called at or past the deadline."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise errors.Unavailable(
                f"cache full: {self._reserved} bytes held by fills in progress",
                message="cache full, try again later",
            )
        self._freed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._freed.wait(), remaining)

    def _unreserve(self, size: int) -> None:
        self._reserved -= size
        self._freed.set()
