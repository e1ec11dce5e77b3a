"""SingleFlight: one task per key, shared outcome, caller cancellation does not cancel it."""

from __future__ import annotations

import asyncio

import pytest

from edge.singleflight import SingleFlight
from edge.timeouts import bounded
from regcore import errors


async def test_concurrent_callers_share_one_run() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    callers = [asyncio.create_task(flight.run("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    assert len(flight) == 1
    gate.set()
    assert await asyncio.gather(*callers) == [42] * 5
    assert calls == 1
    assert len(flight) == 0


async def test_cancelled_caller_leaves_the_run_going_for_others() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    gate = asyncio.Event()

    async def work() -> str:
        await gate.wait()
        return "done"

    first = asyncio.create_task(flight.run("k", work))
    second = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    gate.set()
    assert await second == "done"
    assert first.cancelled()


async def test_error_reaches_every_caller_and_key_is_forgotten() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    runs = 0

    async def boom() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0)
        raise ValueError("x")

    results = await asyncio.gather(
        flight.run("k", boom), flight.run("k", boom), return_exceptions=True
    )
    assert [type(r) for r in results] == [ValueError, ValueError]
    assert runs == 1
    with pytest.raises(ValueError):
        await flight.run("k", boom)
    assert runs == 2


async def test_drain_cancels_what_outlives_the_timeout() -> None:
    flight: SingleFlight[str, None] = SingleFlight()
    task, started = flight.start("k", lambda: asyncio.sleep(30))
    assert started
    await flight.drain(0.01)
    assert task.cancelled()
    assert len(flight) == 0


async def test_bounded_turns_timeout_into_upstream_timeout() -> None:
    with pytest.raises(errors.UpstreamTimeout):
        await bounded(asyncio.sleep(5), 0.01)
    assert await bounded(asyncio.sleep(0, result=7), 1) == 7
