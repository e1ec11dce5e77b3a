"""Tag -> manifest digest, cached for ``tags.ttl`` and kept afterwards as the last known answer.

An entry is ``TagEntry(digest, media_type, size, fetched_at)``. :meth:`TagCache.fresh` says
whether it is within the TTL (serve it without asking upstream); a stale entry stays stored
for :data:`KEEP_SECONDS` so it can be served while the upstream is down, hung, 5xx or 429
(PROTOCOL.md 12). Keys are ``<upstream>/<repo>:<tag>``.

Backends: a dict per node (:class:`LocalTags`: entries expire :data:`KEEP_SECONDS` after their
last write; a read costs a dict lookup and no task), optionally with an aiocache ``RedisCache``
shared by the region (``redis.url``). aiocache is imported only for that shared cache: its
package import loads redis-py (and redis-py cryptography), ~7 MB of memory a lone node has no use
for. With Redis every write also goes to the local memory and a read
that fails (Redis down or slow beyond :data:`REDIS_TIMEOUT`) falls back to it; after a failure
Redis is skipped for :data:`REDIS_RETRY_AFTER` seconds so a dead Redis costs no latency.
``fetched_at`` comes from the injected clock: nodes sharing Redis must share a clock base
(``time.time`` across machines; ``time.monotonic`` is fine on one machine).

Never raises for backend failures (they are logged and counted); not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiocache.base import BaseCache

log = logging.getLogger("quayside.edge.tags")

KEEP_SECONDS = 7 * 24 * 3600
REDIS_TIMEOUT = 0.5
REDIS_RETRY_AFTER = 5.0
NAMESPACE = "quayside:tags"
SWEEP_INTERVAL = 3600.0


@dataclass(frozen=True, slots=True)
class TagEntry:
    """What a tag resolved to, and when (``fetched_at`` on the cache's clock)."""

    digest: str
    media_type: str
    size: int
    fetched_at: float

    @classmethod
    def from_value(cls, value: Any) -> TagEntry | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                digest=str(value["digest"]),
                media_type=str(value["media_type"]),
                size=int(value["size"]),
                fetched_at=float(value["fetched_at"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


class LocalTags:
    """The node's own entries: each expires ``keep`` seconds after its last write (on
    ``time.monotonic``). An expired entry is never returned; expired entries are swept out on a
    write at most every :data:`SWEEP_INTERVAL` seconds, so tags nobody asks for again do not
    stay in memory."""

    def __init__(
        self, keep: float = KEEP_SECONDS, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keep = keep
        self._clock = clock
        self._entries: dict[str, tuple[TagEntry, float]] = {}
        self._next_sweep = clock() + SWEEP_INTERVAL

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> TagEntry | None:
        item = self._entries.get(key)
        if item is None:
            return None
        if self._clock() >= item[1]:
            del self._entries[key]
            return None
        return item[0]

    def set(self, key: str, entry: TagEntry) -> None:
        now = self._clock()
        self._entries[key] = (entry, now + self.keep)
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL
            for k in [k for k, (_, until) in self._entries.items() if now >= until]:
                del self._entries[k]

    def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


class TagCache:
    """Tag entries in memory, optionally shared through Redis (see the module docstring)."""

    def __init__(
        self,
        *,
        ttl: float,
        clock: Callable[[], float],
        shared: BaseCache | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self._local = LocalTags()
        self._shared = shared
        self._on_error = on_error
        self._shared_down_until = 0.0

    @classmethod
    def redis(
        cls,
        url: str,
        *,
        ttl: float,
        clock: Callable[[], float],
        on_error: Callable[[str], None] | None = None,
    ) -> TagCache:
        """A tag cache shared through the Redis at ``url`` (``redis://[:pw@]host:port/db``)."""
        from urllib.parse import urlsplit

        from aiocache import RedisCache

        parts = urlsplit(url)
        db = (parts.path or "/0").strip("/") or "0"
        shared = RedisCache(
            endpoint=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int(db),
            password=parts.password,
            namespace=NAMESPACE,
            timeout=REDIS_TIMEOUT,
            create_connection_timeout=REDIS_TIMEOUT,
        )
        return cls(ttl=ttl, clock=clock, shared=shared, on_error=on_error)

    @staticmethod
    def key(upstream: str, repo: str, tag: str) -> str:
        return f"{upstream}/{repo}:{tag}"

    def fresh(self, entry: TagEntry) -> bool:
        """Within the TTL: serve without asking upstream."""
        return self.clock() - entry.fetched_at < self.ttl

    def entry(self, digest: str, media_type: str, size: int) -> TagEntry:
        """A new entry stamped now."""
        return TagEntry(digest, media_type, size, self.clock())

    async def get(self, upstream: str, repo: str, tag: str) -> TagEntry | None:
        """The stored entry (fresh or stale), or ``None``. Prefers the shared cache."""
        key = self.key(upstream, repo, tag)
        if self._shared_usable():
            try:
                # asyncio.timeout, not aiocache's own (asyncio.wait_for: a task per call).
                async with asyncio.timeout(REDIS_TIMEOUT):
                    value = await self._shared.get(key, timeout=None)  # type: ignore[union-attr]
            except Exception as exc:
                self._shared_failed("get", exc)
            else:
                entry = TagEntry.from_value(value)
                if entry is not None:
                    return entry
        return self._local.get(key)

    async def put(self, upstream: str, repo: str, tag: str, entry: TagEntry) -> None:
        key = self.key(upstream, repo, tag)
        self._local.set(key, entry)
        if self._shared_usable():
            try:
                await self._shared.set(key, asdict(entry), ttl=KEEP_SECONDS)  # type: ignore[union-attr]
            except Exception as exc:
                self._shared_failed("set", exc)

    async def delete(self, upstream: str, repo: str, tag: str) -> None:
        key = self.key(upstream, repo, tag)
        self._local.delete(key)
        if self._shared_usable():
            try:
                await self._shared.delete(key)  # type: ignore[union-attr]
            except Exception as exc:
                self._shared_failed("delete", exc)

    async def close(self) -> None:
        self._local.clear()
        if self._shared is not None:
            with contextlib.suppress(Exception):
                await self._shared.close()

    def _shared_usable(self) -> bool:
        return self._shared is not None and time.monotonic() >= self._shared_down_until

    def _shared_failed(self, op: str, exc: BaseException) -> None:
        self._shared_down_until = time.monotonic() + REDIS_RETRY_AFTER
        log.warning(
            "shared tag cache %s failed (%s); using the local cache", op, type(exc).__name__
        )
        if self._on_error is not None:
            self._on_error(op)
