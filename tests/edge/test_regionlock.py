"""RegionLock against a real redis-server: NX acquire, renewal, compare-and-delete, breaker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from edge.regionlock import Lease, RegionLock, RegionUnavailable, Taken
from harness.redis import RedisServer
from regcore.digest import Digest

A = "http://127.0.0.1:1001"
B = "http://127.0.0.1:1002"
DIGEST = Digest.of(b"region lock test")


@pytest.fixture
async def locks(redis_server: RedisServer) -> AsyncIterator[tuple[RegionLock, RegionLock]]:
    """Two nodes' locks with the shipped timing (TTL, op timeout, breaker), for tests of what
    the scripts decide. Their ops then fail only when Redis does, not when a loaded machine
    leaves this process unscheduled for a few tenths of a second (a connect needs ~1 ms of
    CPU; a tight op timeout turns the run queue's wait into RegionUnavailable), and a TTL no
    test waits out means a key gone after release() was deleted, not expired."""
    a = RegionLock(redis_server.url)
    b = RegionLock(redis_server.url)
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
async def short_ttl_locks(
    redis_server: RedisServer,
) -> AsyncIterator[tuple[RegionLock, RegionLock]]:
    """A 0.4 s TTL, so that renewals and expiry happen within the test (what it checks)."""
    a = RegionLock(redis_server.url, ttl=0.4, op_timeout=0.3, breaker_seconds=0.5)
    b = RegionLock(redis_server.url, ttl=0.4, op_timeout=0.3, breaker_seconds=0.5)
    yield a, b
    await a.close()
    await b.close()


async def test_one_owner_then_release(locks: tuple[RegionLock, RegionLock]) -> None:
    a, b = locks
    got = await a.acquire(DIGEST, A)
    assert isinstance(got, Lease)
    assert await b.acquire(DIGEST, B) == Taken(DIGEST, A)
    assert await b.owner(DIGEST) == A
    await a.release(got)
    assert await b.owner(DIGEST) is None  # deleted (the shipped TTL is far from over)
    got_b = await b.acquire(DIGEST, B)
    assert isinstance(got_b, Lease)
    await b.release(got_b)


async def test_renewal_keeps_a_slow_fill_locked_beyond_the_ttl(
    short_ttl_locks: tuple[RegionLock, RegionLock],
) -> None:
    a, b = short_ttl_locks
    lease = await a.acquire(DIGEST, A)
    assert isinstance(lease, Lease)
    await asyncio.sleep(a.ttl * 3)
    assert await b.owner(DIGEST) == A and not lease.lost
    await a.release(lease)
    # Without renewal the key expires after the TTL.
    await a.redis.set(a.key(DIGEST), B, px=a.ttl_ms)
    await asyncio.sleep(a.ttl * 1.5)
    assert await a.owner(DIGEST) is None


async def test_release_never_deletes_a_lock_taken_over(
    short_ttl_locks: tuple[RegionLock, RegionLock],
) -> None:
    a, b = short_ttl_locks
    lease = await a.acquire(DIGEST, A)
    assert isinstance(lease, Lease)
    assert await b.steal(DIGEST, "http://someone-else", B) is None  # held by A, not by them
    stolen = await b.steal(DIGEST, A, B)
    assert stolen is not None
    await asyncio.sleep(a.ttl / 3 + 0.15)  # A's next renewal notices
    assert lease.lost
    await a.release(lease)
    assert await a.owner(DIGEST) == B
    await b.release(stolen)
    assert await a.owner(DIGEST) is None


async def test_redis_down_fails_fast_behind_a_breaker_then_recovers(
    redis_server: RedisServer,
) -> None:
    lock = RegionLock(redis_server.url, ttl=1.0, op_timeout=0.3, breaker_seconds=0.5)
    try:
        assert isinstance(await lock.acquire(DIGEST, A), Lease)
        redis_server.kill()
        with pytest.raises(RegionUnavailable):
            await lock.owner(DIGEST)
        t0 = time.monotonic()
        for _ in range(100):  # breaker open: no connection attempts
            with pytest.raises(RegionUnavailable):
                await lock.acquire(DIGEST, B)
        assert time.monotonic() - t0 < 0.2
        failures = lock.failures
        redis_server.start()
        await asyncio.sleep(0.55)
        assert await lock.owner(DIGEST) is None  # fresh server, breaker closed again
        assert lock.failures == failures
        assert isinstance(await lock.acquire(DIGEST, B), Lease)
    finally:
        await lock.close()


async def test_hung_redis_answers_within_the_op_timeout(redis_server: RedisServer) -> None:
    lock = RegionLock(redis_server.url, ttl=1.0, op_timeout=0.2, breaker_seconds=5)
    try:
        await lock.owner(DIGEST)
        redis_server.pause()
        t0 = time.monotonic()
        with pytest.raises(RegionUnavailable):
            await lock.acquire(DIGEST, A)
        assert time.monotonic() - t0 < 1.0
    finally:
        redis_server.resume()
        await lock.close()
