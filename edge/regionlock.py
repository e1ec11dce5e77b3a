"""The region-wide fill lock: one fill per digest across the edge nodes sharing a Redis.

Protocol (key ``fill:<digest>``, value the owner's advertised URL)::

    acquire:  GET key; absent -> SET key <url> PX <ttl>   (one Lua script: atomic, returns
              the current owner when taken)
    renew:    every ttl/3 while filling: if GET key == <url> then PEXPIRE key <ttl>   (Lua)
    release:  if GET key == <url> then DEL key                                     (Lua)
    steal:    if GET key is absent or == <expected owner> then SET key <url> PX <ttl> (Lua)

Interface (edge/fill.py)::

    lock = RegionLock(redis_url_or_client, ttl=30.0)
    got = await lock.acquire(digest, my_url)   # Lease (ours, renewed) | Taken(owner_url)
    await lock.owner(digest) -> str | None
    await lock.steal(digest, expected_owner, my_url) -> Lease | None
    await lock.release(lease)                  # never raises
    await lock.close()

Guarantees and errors:
- Every operation other than :meth:`release` raises :class:`RegionUnavailable` when Redis is
  unreachable, slow (``op_timeout``) or answers an error; callers then fill node-locally.
- Circuit breaker: after a failure, operations fail fast with :class:`RegionUnavailable` for
  ``breaker_seconds`` (Redis is not hammered); the next call after that tries Redis again.
- redis-py is imported when the first lock is built from a URL, not with this module: the
  fill machinery names these types on every node, a region only where Redis is configured.
- A :class:`Lease` is renewed in a background task owned by this object until released; if
  the key was taken over meanwhile, ``lease.lost`` becomes True and renewal stops (the fill
  goes on; the region may see a second fetch, never wrong bytes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from regcore.background import cancel_and_wait
from regcore.digest import Digest

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if v then return {0, v} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, ARGV[1]}
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_STEAL = """
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


class RegionUnavailable(Exception):
    """Redis could not be asked (down, hung, erroring, or the circuit breaker is open)."""


@dataclass(eq=False)
class Lease:
    """This node holds ``fill:<digest>``; renewed until released."""

    digest: Digest
    owner: str
    lost: bool = False
    _renewer: asyncio.Task[None] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Taken:
    """Another node holds the lock; stream from ``owner``."""

    digest: Digest
    owner: str


class RegionLock:
    """Redis ``SET NX PX`` locks with compare-and-renew / compare-and-delete."""

    def __init__(
        self,
        redis: Redis | str,
        *,
        ttl: float = 30.0,
        op_timeout: float = 1.0,
        breaker_seconds: float = 5.0,
        key_prefix: str = "fill:",
    ) -> None:
        if isinstance(redis, str):
            # redis-py is imported by the nodes of a region only (a lone node never loads it)
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            redis = Redis.from_url(
                redis,
                decode_responses=True,
                socket_timeout=op_timeout,
                socket_connect_timeout=op_timeout,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
            self._own_client = True
        else:
            self._own_client = False
        self.redis = redis
        self.ttl = ttl
        self.op_timeout = op_timeout
        self.breaker_seconds = breaker_seconds
        self.key_prefix = key_prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._steal = redis.register_script(_STEAL)
        self._open_until = 0.0
        self._renewers: set[asyncio.Task[None]] = set()
        self.failures = 0  # Redis errors seen (for health/metrics)

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def key(self, digest: Digest) -> str:
        return f"{self.key_prefix}{digest}"

    @property
    def available(self) -> bool:
        """False while the circuit breaker is open."""
        return asyncio.get_running_loop().time() >= self._open_until

    async def acquire(self, digest: Digest, owner_url: str) -> Lease | Taken:
        """Take the lock or learn who holds it. Raises RegionUnavailable."""
        got, owner = await self._call(
            self._acquire(keys=[self.key(digest)], args=[owner_url, self.ttl_ms])
        )
        if int(got) == 1:
            return self._lease(digest, owner_url)
        return Taken(digest, _text(owner))

    async def owner(self, digest: Digest) -> str | None:
        """The URL of the node filling ``digest`` now, or None. Raises RegionUnavailable."""
        value = await self._call(self.redis.get(self.key(digest)))
        return None if value is None else _text(value)

    async def steal(
        self, digest: Digest, expected_owner: str | None, owner_url: str
    ) -> Lease | None:
        """Take the lock if it is free or still held by ``expected_owner``; else None."""
        got = await self._call(
            self._steal(
                keys=[self.key(digest)], args=[expected_owner or "", owner_url, self.ttl_ms]
            )
        )
        return self._lease(digest, owner_url) if int(got) == 1 else None

    async def release(self, lease: Lease) -> None:
        """Stop renewing and delete the key if it is still ours. Never raises."""
        if lease._renewer is not None:
            await cancel_and_wait(lease._renewer)
            lease._renewer = None
        if lease.lost:
            return
        try:
            await self._call(self._release(keys=[self.key(lease.digest)], args=[lease.owner]))
        except RegionUnavailable:
            log.warning(
                "could not release fill lock for %s (expires in %.1fs)", lease.digest, self.ttl
            )

    async def close(self) -> None:
        for task in list(self._renewers):
            task.cancel()
        if self._renewers:
            await asyncio.gather(*self._renewers, return_exceptions=True)
        if self._own_client:
            await self.redis.aclose()

    # -- internals ------------------------------------------------------------------------
    def _lease(self, digest: Digest, owner_url: str) -> Lease:
        lease = Lease(digest, owner_url)
        task = asyncio.create_task(self._renew_loop(lease), name=f"renew {digest}")
        self._renewers.add(task)
        task.add_done_callback(self._renewers.discard)
        lease._renewer = task
        return lease

    async def _renew_loop(self, lease: Lease) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                ok = await self._call(
                    self._renew(keys=[self.key(lease.digest)], args=[lease.owner, self.ttl_ms]),
                    force=True,
                )
            except RegionUnavailable:
                continue  # try again next period; the fill goes on
            if not int(ok):
                lease.lost = True
                log.warning("fill lock for %s was taken over by another node", lease.digest)
                return

    async def _call(self, op: Awaitable[_T], *, force: bool = False) -> _T:
        loop = asyncio.get_running_loop()
        if not force and loop.time() < self._open_until:
            if asyncio.iscoroutine(op):
                op.close()
            raise RegionUnavailable("redis circuit breaker open")
        try:
            result = await asyncio.wait_for(op, self.op_timeout * 2)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            self.failures += 1
            self._open_until = loop.time() + self.breaker_seconds
            log.warning(
                "redis unavailable (%s: %s); node-local fills for %.1fs",
                type(exc).__name__,
                exc,
                self.breaker_seconds,
            )
            raise RegionUnavailable(str(exc) or type(exc).__name__) from exc
        self._open_until = 0.0
        return result


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
