"""The worker that empties one :class:`~origin.notifications.queue.DiskQueue`, oldest item first.

``handle(item)`` is awaited for each item; when it returns, the item is removed; when it raises,
the item stays at the head of the queue and is tried again: after ``retry_delay`` while fewer
than ``threshold`` attempts in a row have failed, then every ``backoff`` seconds (distribution's
breaker: ``threshold`` failures open it, ``backoff`` is the wait before the next try). Order is
kept: nothing overtakes a failing item.

Lifecycle: :meth:`start` creates the task (owned by the application, drained at shutdown);
:meth:`wake` says a new item was put; items put by other processes are found by polling every
``poll`` seconds. :meth:`close` lets an attempt in flight finish (up to ``grace`` seconds, so an
item the endpoint accepted is removed rather than sent again after a restart), then cancels the
task and releases the queue's lock. The worker waits for the queue's ``flock`` before its first
attempt (another process on the same root may hold it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from origin.notifications.queue import DiskQueue
from regcore.background import cancel_and_wait

__all__ = ["QueueWorker"]

log = logging.getLogger("quayside.origin.events")

Outcome = Callable[[str, BaseException | None], None]


class QueueWorker:
    """See the module docstring. ``on_outcome("ok"|"failed", error)`` after each attempt."""

    def __init__(
        self,
        name: str,
        queue: DiskQueue,
        handle: Callable[[bytes], Awaitable[None]],
        *,
        threshold: int = 10,
        backoff: float = 1.0,
        retry_delay: float = 0.1,
        poll: float = 1.0,
        on_outcome: Outcome | None = None,
    ) -> None:
        self.name = name
        self.queue = queue
        self.handle = handle
        self.threshold = threshold
        self.backoff = backoff
        self.retry_delay = retry_delay
        self.poll = poll
        self.on_outcome = on_outcome
        self.failures = 0
        self._wakeup = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"queue-worker-{self.name}")

    def wake(self) -> None:
        self._wakeup.set()

    async def close(self, grace: float = 5.0) -> None:
        """Stop after the attempt in flight (at most ``grace`` s); see the module docstring."""
        self._stop.set()
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except TimeoutError:
                await cancel_and_wait(task)
        await asyncio.to_thread(self.queue.unlock)

    async def _pause(self, seconds: float, event: asyncio.Event) -> None:
        """Sleep ``seconds`` or until ``event`` is set (the stop event always ends it)."""
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._stop.wait())}
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _run(self) -> None:
        while not self._stop.is_set() and not await asyncio.to_thread(self.queue.lock):
            await self._pause(self.poll * 5, self._stop)
        while not self._stop.is_set():
            self._wakeup.clear()
            batch = await asyncio.to_thread(self.queue.pending, 64)
            if not batch:
                await self._pause(self.poll, self._wakeup)
                continue
            for path in batch:
                if self._stop.is_set():
                    return
                data = await asyncio.to_thread(self.queue.read, path)
                if data is None:
                    continue
                try:
                    await self.handle(data)
                except Exception as exc:
                    self.failures += 1
                    if self.on_outcome is not None:
                        self.on_outcome("failed", exc)
                    delay = self.backoff if self.failures >= self.threshold else self.retry_delay
                    log.warning(
                        "delivery failed; will retry",
                        extra={
                            "worker": self.name,
                            "error": f"{type(exc).__name__}: {exc}"[:300],
                            "failures": self.failures,
                            "retry_in": delay,
                        },
                    )
                    await self._pause(delay, self._stop)
                    break  # re-scan: the failed item is still the oldest
                self.failures = 0
                await asyncio.to_thread(self.queue.remove, path)
                if self.on_outcome is not None:
                    self.on_outcome("ok", None)
