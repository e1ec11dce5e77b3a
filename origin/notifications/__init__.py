"""Registry events: distribution's notifications (webhooks) and the replication they feed.

Modules: :mod:`.events` (the envelope format), :mod:`.queue` (bounded FIFO on disk),
:mod:`.worker` (delivery with retry and backoff), :mod:`.hub` (fan-out to endpoints and
listeners), :mod:`.middleware` (the one place events are made). :func:`install` wires them
(and :class:`origin.replication.Replicator`) into the origin application when
``notifications.endpoints`` or ``quayside.replication.targets`` are configured; without them
the origin has no events middleware at all (no cost per request).
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from origin import state
from origin.access import ACCESS
from origin.metrics import OriginMetrics
from origin.notifications.events import SourceRecord
from origin.notifications.hub import EventHub
from origin.notifications.middleware import EVENTS, SOURCE, events_middleware

__all__ = ["EVENTS", "REPLICATOR", "install", "middlewares"]

REPLICATOR: web.AppKey[Any] = web.AppKey("origin_replicator", object)  # origin.replication


def _configured(config: Any) -> bool:
    return bool(config.notifications.active or config.replication.targets)


def middlewares(config: Any) -> list[Any]:
    """The events middleware when events are configured (put it inside access control)."""
    return [events_middleware] if _configured(config) else []


def install(app: web.Application, config: Any, metrics: OriginMetrics) -> None:
    """Set the hub (and replicator) on ``app`` and start/stop them with it. A no-op when
    neither notifications nor replication are configured. Call after ``app[ACCESS]`` is set."""
    if not _configured(config):
        return
    hub = EventHub(config.notifications, metrics=metrics)
    _, port = config.http.bind
    app[EVENTS] = hub
    app[SOURCE] = SourceRecord(f"{socket.gethostname()}:{port}", str(uuid.uuid4()))
    replicator = None
    if config.replication.targets:
        from origin.replication import Replicator

        replicator = Replicator(
            config.replication, app[state.LAYOUT], metrics=metrics, audit=app[ACCESS].audit
        )
        hub.listeners.append(replicator.accept)
        app[REPLICATOR] = replicator

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        hub.start()
        if replicator is not None:
            await replicator.open(workers=not app[state.READONLY])
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await hub.close()
            if replicator is not None:
                await replicator.close()

    app.cleanup_ctx.append(lifecycle)
