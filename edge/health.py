"""The edge's ``/healthz`` (live) and ``/readyz`` (ready): what is true now, cheaply.

:class:`EdgeHealth` runs the checks; :meth:`EdgeHealth.add_routes` registers both routes and
closes its connections at application cleanup. Every check is cached for
:data:`regcore.health.RESULT_TTL` s (upstream pings: :data:`UPSTREAM_TTL` s) and bounded in
time, so a probe storm costs one check per TTL and a hung dependency cannot hang the answer.

``/healthz`` -- is this node alive and able to cache?

- ``storage`` (required): a two-byte write, ``fsync`` and unlink in the cache's
  ``_incomplete/`` (:func:`regcore.health.probe_writable`);
- ``redis`` (only with ``redis.url``): ``PING`` on a connection of its own with a
  :data:`REDIS_TIMEOUT` s timeout. A region without Redis still serves (node-local fills), so a
  failure makes the answer ``degraded`` (200), never 503: a liveness probe must not restart
  every node of a region because Redis is down. The top-level ``"redis"`` is ``true`` only
  when the ping answered;
- ``disk`` (informational): free bytes and inodes of the cache's filesystem.

``/readyz`` -- can it fetch what it does not have? The same checks plus ``upstreams``
(required): ``GET /v2/`` on each configured upstream (no credentials: any answer below 500,
401 included, means reachable). Not ready only when *no* upstream answers (``reason`` names
each failure); some down is ``degraded``. A node whose upstreams are all down is still live
(it serves its cache), so route traffic with ``/healthz`` and use ``/readyz`` for alerts and
deploy gates.

503 while the node is starting or stopping (``serving()`` false), for both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from regcore import USER_AGENT
from regcore.health import (
    CachedCheck,
    Check,
    HealthReport,
    describe_error,
    disk_space,
    headroom,
    probe_writable,
)
from regcore.storage.layout import Layout

if TYPE_CHECKING:
    from edge.config import EdgeConfig
    from edge.upstreamconfig import UpstreamConfig

__all__ = ["REDIS_TIMEOUT", "UPSTREAM_TIMEOUT", "UPSTREAM_TTL", "EdgeHealth"]

REDIS_TIMEOUT = 0.5
UPSTREAM_TIMEOUT = 3.0
UPSTREAM_TTL = 5.0


class EdgeHealth:
    """The edge's checks for ``config`` (``cache.dir``, ``redis.url``, ``upstreams``).

    ``serving()`` says whether the node is started; ``extra()`` adds fields to both bodies
    (names of upstreams, cache bytes...; ``status``, ``reason``, ``checks`` and ``redis`` are
    this class's). Opens its own Redis connection and HTTP session on first use; :meth:`close`
    releases them. One event loop.
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        serving: Callable[[], bool],
        extra: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self.serving = serving
        self.extra = extra
        self.layout = Layout(Path(config.cache.dir), v2_prefix=False)
        self._storage = CachedCheck(self._check_storage)
        self._disk = CachedCheck(self._check_disk)
        self._redis_check = CachedCheck(self._check_redis, timeout=REDIS_TIMEOUT * 2)
        self._upstreams = CachedCheck(
            self._check_upstreams,
            ttl=UPSTREAM_TTL,
            timeout=UPSTREAM_TIMEOUT + 1,
            on_error=lambda detail: {"upstreams": Check(False, detail)},
        )
        self._redis: Any = None
        self._session: aiohttp.ClientSession | None = None

    # -- reports ------------------------------------------------------------------------
    async def live(self) -> HealthReport:
        """``storage``, ``disk`` and (with ``redis.url``) ``redis``; see the module docstring."""
        return self._report(await self._live_checks())

    async def ready(self) -> HealthReport:
        """The live checks plus ``upstreams``."""
        checks, upstreams = await asyncio.gather(self._live_checks(), self._upstreams.get())
        return self._report({**checks, **upstreams})

    async def _live_checks(self) -> dict[str, Check]:
        names = ["storage", "disk"]
        runs = [self._storage.get(), self._disk.get()]
        if self.config.redis.url is not None:
            names.append("redis")
            runs.append(self._redis_check.get())
        return dict(zip(names, await asyncio.gather(*runs), strict=True))

    def _report(self, checks: dict[str, Check]) -> HealthReport:
        extra = dict(self.extra() if self.extra is not None else {})
        redis = checks.get("redis")
        extra["redis"] = redis is not None and redis.ok
        return HealthReport(
            checks, frozenset({"storage", "upstreams"}), serving=self.serving(), extra=extra
        )

    # -- checks -------------------------------------------------------------------------
    async def _check_storage(self) -> Check:
        await asyncio.to_thread(probe_writable, self.layout)
        return Check(True, "writable")

    async def _check_disk(self) -> Check:
        return headroom(await asyncio.to_thread(disk_space, self.layout.root))

    async def _check_redis(self) -> Check:
        if self._redis is None:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._redis = Redis.from_url(
                self.config.redis.url,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        try:
            await self._redis.ping()
        except Exception as exc:  # any failure to answer PING is "down"
            return Check(False, f"no answer to PING: {describe_error(exc)}")
        return Check(True, "PING answered")

    async def _check_upstreams(self) -> dict[str, Check]:
        upstreams = self.config.upstreams
        results = await asyncio.gather(*(self._ping(u) for u in upstreams))
        checks = {f"upstream:{u.name}": r for u, r in zip(upstreams, results, strict=True)}
        answered = sum(1 for r in results if r.ok)
        summary = (
            f"{answered} of {len(upstreams)} upstreams answer" if upstreams else "none configured"
        )
        return {"upstreams": Check(answered > 0, summary), **checks}

    async def _ping(self, upstream: UpstreamConfig) -> Check:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT}, cookie_jar=aiohttp.DummyCookieJar()
            )
        timeout = aiohttp.ClientTimeout(total=min(UPSTREAM_TIMEOUT, upstream.connect_timeout + 1))
        try:
            async with self._session.get(
                upstream.url + "/v2/", timeout=timeout, allow_redirects=False
            ) as resp:
                status = resp.status
        except Exception as exc:  # refused, reset, TLS, DNS, timeout: all "down"
            return Check(False, f"unreachable: {describe_error(exc)}")
        return Check(status < 500, f"GET /v2/ answered {status}")

    # -- wiring -------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop checks in flight and close the Redis connection and the HTTP session."""
        for check in (self._storage, self._disk, self._redis_check, self._upstreams):
            await check.close()
        redis, self._redis = self._redis, None
        if redis is not None:
            await redis.aclose()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def healthz(self, request: web.Request) -> web.Response:
        return (await self.live()).response()

    async def readyz(self, request: web.Request) -> web.Response:
        return (await self.ready()).response()

    def add_routes(self, app: web.Application) -> None:
        """Register ``/healthz`` and ``/readyz`` and close this object at app cleanup."""

        async def lifespan(app: web.Application) -> AsyncIterator[None]:
            yield
            await self.close()

        app.cleanup_ctx.append(lifespan)
        app.router.add_get("/healthz", self.healthz, name="healthz")
        app.router.add_get("/readyz", self.readyz, name="readyz")
