"""A bounded memo for pure per-request computations (``Accept`` parsing, routes).

:class:`Memo` holds at most ``size`` results; when full it is emptied at once rather than kept
in LRU order (the working set of distinct request headers and paths is small, and a clear is
cheaper than LRU bookkeeping on every hit). Only for pure functions: a stored value is returned
for its key until the memo is cleared. Not thread-safe: one event loop.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MEMO_ENTRIES = 256


class Memo(Generic[K, V]):
    """``key -> value`` for at most ``size`` keys (see the module docstring)."""

    def __init__(self, size: int = MEMO_ENTRIES) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self._values: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: K) -> V | None:
        return self._values.get(key)

    def put(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` (emptying the memo first when it is full); returns it."""
        if len(self._values) >= self.size:
            self._values.clear()
        self._values[key] = value
        return value
