"""Keyed single flight: one running operation per key, every caller shares its outcome.

``SingleFlight.run(key, factory)`` starts ``factory()`` as a task owned by the flight map (not by
the caller) when no task runs for ``key``; later callers with the same key await the same task.
Guarantees:
- At most one task per key is running at any time; the key is forgotten as soon as its task
  finishes (success, error or cancellation), so the next call starts afresh.
- A caller that is cancelled (client disconnect, timeout) does not cancel the shared task: it is
  awaited through :func:`asyncio.shield`, and the other callers still get its result.
- A task's exception is always retrieved, so a failure nobody waits for any more is never
  reported as "exception was never retrieved".
- :meth:`drain` waits for every running task (shutdown), bounded by a timeout.
Not thread-safe: use from one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """One task per key; see the module docstring for the guarantees."""

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def running(self, key: K) -> asyncio.Future[V] | None:
        """The task running for ``key``, or None."""
        return self._tasks.get(key)

    def start(self, key: K, factory: Callable[[], Awaitable[V]]) -> tuple[asyncio.Future[V], bool]:
        """The task for ``key`` and whether this call started it (False: joined a running one)."""
        task = self._tasks.get(key)
        if task is not None:
            return task, False
        task = asyncio.ensure_future(factory())
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._forget(key, t))
        return task, True

    async def run(self, key: K, factory: Callable[[], Awaitable[V]]) -> V:
        """Join or start the operation for ``key`` and return its result (or raise its error)."""
        task, _ = self.start(key, factory)
        return await asyncio.shield(task)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for every running task; cancel what is still running."""
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task

    def _forget(self, key: K, task: asyncio.Future[V]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved: callers that left must not leave it unobserved
