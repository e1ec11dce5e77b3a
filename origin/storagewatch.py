"""``health.storagedriver``: distribution's periodic storage check and the 503 it gates.

With ``health.storagedriver.enabled``, a task owned by the application checks the storage every
``interval`` seconds: the root is stat'ed and the blob tree opened for listing (in a thread,
bounded by :data:`regcore.health.PROBE_TIMEOUT`). After ``threshold`` failures in a row the
origin is unhealthy and answers every request 503 ``UNAVAILABLE`` (as distribution's health
handler does for its whole API) until one check succeeds again. ``/healthz``, ``/readyz`` and
``/metrics`` keep answering: they report the state rather than depend on it. Each change of
state is logged once (warning when it turns unhealthy). The task is cancelled and awaited at
shutdown; a check that raises counts as a failure, never ends the task.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from regcore import errors
from regcore.background import background
from regcore.health import PROBE_TIMEOUT, describe_error
from regcore.http import Handler
from regcore.storage.layout import Layout

__all__ = ["EXEMPT_PATHS", "WATCH", "StorageWatch", "install", "middlewares"]

log = logging.getLogger("quayside.origin")

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class StorageWatch:
    """Consecutive failures of ``probe`` (default: :meth:`probe_layout`) against
    ``threshold``. Not thread-safe: used from the event loop only."""

    def __init__(
        self,
        layout: Layout,
        *,
        interval: float,
        threshold: int,
        probe: Callable[[], None] | None = None,
    ) -> None:
        self.layout = layout
        self.interval = interval
        self.threshold = threshold
        self.probe = probe if probe is not None else self.probe_layout
        self.failures = 0
        self.last_error = ""

    @property
    def healthy(self) -> bool:
        return self.failures < self.threshold

    def probe_layout(self) -> None:
        """Stat the root and open the blob tree (absent on a fresh root). Raises OSError."""
        os.stat(self.layout.root)
        if self.layout.blobs.exists():
            with os.scandir(self.layout.blobs) as it:
                next(it, None)

    async def check(self) -> bool:
        """Run the probe once and update the count; returns whether it succeeded."""
        was = self.healthy
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await asyncio.to_thread(self.probe)
        except (OSError, TimeoutError) as exc:
            self.failures += 1
            self.last_error = describe_error(exc)
        else:
            self.failures = 0
            self.last_error = ""
        if was and not self.healthy:
            log.warning(
                "storage check failed: answering 503",
                extra={"failures": self.failures, "error": self.last_error},
            )
        elif not was and self.healthy:
            log.info("storage check passed again: serving")
        return self.failures == 0

    async def run(self) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            await self.check()


WATCH: web.AppKey[StorageWatch] = web.AppKey("origin_storage_watch", StorageWatch)


@web.middleware
async def _gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    watch = request.app[WATCH]
    if not watch.healthy and request.path not in EXEMPT_PATHS:
        raise errors.Unavailable(f"storage check failing: {watch.last_error or 'unknown error'}")
    return await handler(request)


async def _lifespan(app: web.Application) -> AsyncIterator[None]:
    async with background(app[WATCH].run(), name="origin-storage-watch"):
        yield


def middlewares(config: Any) -> list[Any]:
    """The 503 gate when ``health.storagedriver.enabled``, else nothing."""
    health = getattr(config, "health", None)
    return [_gate] if health is not None and health.storagedriver_enabled else []


def install(app: web.Application, config: Any, layout: Layout) -> None:
    """Own a :class:`StorageWatch` (under :data:`WATCH`) and its task when enabled."""
    health = getattr(config, "health", None)
    if health is None or not health.storagedriver_enabled:
        return
    app[WATCH] = StorageWatch(
        layout,
        interval=health.storagedriver_interval,
        threshold=health.storagedriver_threshold,
    )
    app.cleanup_ctx.append(_lifespan)
