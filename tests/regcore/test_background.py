"""regcore.background: a task started by :func:`background` is cancelled and awaited to its
end when the block exits; :func:`cancel_and_wait` cancels every task before awaiting any; a
failure other than cancellation is raised as by the code they replace
(``task.cancel()`` then ``with contextlib.suppress(asyncio.CancelledError): await task``)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from regcore.background import background, cancel_and_wait


async def _old_pattern(*tasks: asyncio.Future[object]) -> None:
    """What the converted sites wrote by hand."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_background_cancels_and_awaits_the_task_on_exit() -> None:
    events: list[str] = []

    async def loop() -> None:
        events.append("started")
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # its cleanup takes a turn of the loop: it is awaited
            events.append("cleaned up")

    async with background(loop(), name="the-loop") as task:
        await asyncio.sleep(0)
        assert task.get_name() == "the-loop"
        assert not task.done()
    assert task.cancelled()
    assert events == ["started", "cleaned up"]


async def test_background_exit_when_the_task_already_returned() -> None:
    async def quick() -> int:
        return 7

    async with background(quick()) as task:
        await asyncio.sleep(0)
    assert task.result() == 7


@pytest.mark.parametrize("stop", [_old_pattern, cancel_and_wait], ids=["old", "helper"])
async def test_a_failed_task_raises_its_error_on_exit(stop: object) -> None:
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="boom"):
        await stop(task)  # type: ignore[operator]


async def test_background_raises_the_task_failure_on_exit() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        async with background(fails()):
            await asyncio.sleep(0)


async def test_background_cancels_the_task_when_the_block_raises() -> None:
    with pytest.raises(KeyError):
        async with background(asyncio.Event().wait()) as task:
            raise KeyError("body")
    assert task.cancelled()


async def test_cancel_and_wait_cancels_every_task_before_awaiting_any() -> None:
    async def fails() -> None:
        raise ValueError("first")

    first = asyncio.create_task(fails())
    second = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="first"):
        await cancel_and_wait(first, second)  # the first failure is raised...
    await asyncio.sleep(0)
    assert second.cancelled()  # ...and the later task was cancelled all the same


async def test_cancel_and_wait_several_running_tasks_and_none() -> None:
    tasks = [asyncio.create_task(asyncio.sleep(3600)) for _ in range(3)]
    await cancel_and_wait(*tasks)
    assert all(t.cancelled() for t in tasks)
    await cancel_and_wait()
