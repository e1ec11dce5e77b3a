"""The gc lock: exclusive excludes shared, shared holders run together, re-entrant shared,
and a writer that takes the lock back to back does not starve the readers behind it."""

from __future__ import annotations

import asyncio

from origin.writeguard import WriteGuard
from regcore.digest import Digest


async def test_exclusive_waits_for_shared_holders_and_blocks_new_ones():
    guard = WriteGuard()
    log: list[str] = []
    entered = asyncio.Event()
    release = asyncio.Event()

    async def reader(name: str, hold: asyncio.Event | None = None) -> None:
        async with guard.shared():
            log.append(f"{name}+")
            entered.set()
            if hold is not None:
                await hold.wait()
            log.append(f"{name}-")

    async def writer() -> None:
        async with guard.exclusive():
            log.append("w+")
            await asyncio.sleep(0.01)
            log.append("w-")

    r1 = asyncio.create_task(reader("r1", release))
    await entered.wait()
    w = asyncio.create_task(writer())
    await asyncio.sleep(0.01)
    r2 = asyncio.create_task(reader("r2"))  # arrives while the writer waits: goes after it
    await asyncio.sleep(0.01)
    assert log == ["r1+"]
    release.set()
    await asyncio.gather(r1, w, r2)
    assert log == ["r1+", "r1-", "w+", "w-", "r2+", "r2-"]


async def test_shared_is_reentrant_while_a_writer_waits():
    guard = WriteGuard()

    async def nested() -> str:
        async with guard.shared():
            await asyncio.sleep(0.01)  # a writer starts waiting now
            async with guard.shared():  # must not deadlock behind it
                return "ok"

    task = asyncio.create_task(nested())
    await asyncio.sleep(0.001)

    async def writer() -> None:
        async with guard.exclusive():
            pass

    w = asyncio.create_task(writer())
    assert await asyncio.wait_for(task, 2) == "ok"
    await asyncio.wait_for(w, 2)


async def test_back_to_back_writer_lets_waiting_readers_in_between_batches():
    guard = WriteGuard()
    done = 0

    async def sweeper() -> int:
        batches = 0
        while done < 20:
            async with guard.exclusive():
                await asyncio.sleep(0.001)
            batches += 1
            if batches > 10_000:
                break
        return batches

    async def reader() -> None:
        nonlocal done
        async with guard.shared():
            done += 1

    sweep = asyncio.create_task(sweeper())
    await asyncio.sleep(0.005)
    await asyncio.wait_for(asyncio.gather(*(reader() for _ in range(20))), 5)
    assert await sweep < 10_000


async def test_touch_record_answers_since_and_is_bounded():
    now = [1000.0]
    guard = WriteGuard(clock=lambda: now[0], keep=100.0, max_entries=3)
    a, b, c, d = (Digest("sha256", f"{i:064x}") for i in range(4))
    guard.touch([a])
    now[0] = 1050.0
    guard.touch([b, c])
    assert guard.touched_since(a, 1000.0) and not guard.touched_since(a, 1000.1)
    now[0] = 1120.0
    guard.touch([d])  # a is older than keep: pruned
    assert not guard.touched_since(a, 0.0)
    assert guard.touched_since(b, 1050.0) and guard.touched_since(d, 1120.0)


async def test_using_touches_when_the_section_ends_not_when_it_begins():
    """The touch of a shared section is as late as its last write (also when it raises), so a
    sweep batch after it never sees a touch older than what the section wrote."""
    now = [1000.0]
    guard = WriteGuard(clock=lambda: now[0])
    a, b = (Digest("sha256", f"{i:064x}") for i in range(2))
    async with guard.using([a]):
        assert guard.readers == 1
        assert not guard.touched_since(a, 0.0)
        now[0] = 1500.0  # a long section: the link is written now
    assert guard.readers == 0
    assert guard.touched_since(a, 1500.0)
    try:
        async with guard.using([b]):
            now[0] = 1600.0
            raise RuntimeError("failed after a write")
    except RuntimeError:
        pass
    assert guard.touched_since(b, 1600.0) and guard.readers == 0
