"""Background tasks that live as long as something else (an application, a store, a lease).

- :func:`background` is an async context manager: it starts ``coro`` as a task, yields the
  task and, on exit, cancels it and waits for it to end. Use it in an aiohttp
  ``cleanup_ctx`` (``async with background(loop(), name=...): yield``).
- :func:`cancel_and_wait` is the exit half on its own, for tasks started in one method and
  stopped in another (``start``/``close``): every task is cancelled first, then each is
  awaited in turn.

A task that ends by cancellation is not an error; a task that had already failed with any
other exception re-raises it from the wait (the first such one: the tasks after it are
cancelled but not awaited), as ``task.cancel()`` followed by ``with
contextlib.suppress(asyncio.CancelledError): await task`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel every task, then await each one; ``CancelledError`` is suppressed, any other
    exception a task ended with is raised."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def background(
    coro: Coroutine[Any, Any, T], *, name: str | None = None
) -> AsyncIterator[asyncio.Task[T]]:
    """Run ``coro`` as a task (named ``name``) for the ``async with`` block; on exit cancel
    it and wait for it (see :func:`cancel_and_wait`)."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        await cancel_and_wait(task)
