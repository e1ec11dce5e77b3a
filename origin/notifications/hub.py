"""The origin's event hub: every event goes to each endpoint's on-disk queue and to listeners.

One :class:`EventHub` per application (built by :func:`build_hub` from
:class:`~regcore.eventsconfig.NotificationsConfig`). :meth:`EventHub.emit` is the only way in
(the events middleware calls it; offline tools use :func:`enqueue_offline`):

- per enabled endpoint, events it does not ignore (``ignore.actions``, ``ignore.mediatypes`` /
  ``ignoredmediatypes`` on the target's media type) are written to
  ``<directory>/<endpoint>/`` (:class:`~origin.notifications.queue.DiskQueue`; push, mount and
  delete events fsynced, pulls not) before the request's answer is sent, so an answered
  request's event survives a restart;
- listeners (replication) get every event, in the same thread;
- each endpoint's :class:`~origin.notifications.worker.QueueWorker` POSTs one event per
  envelope (as registry:2 does) with the endpoint's headers and ``timeout``; a 2xx answer
  removes it from the queue, anything else (other status, refused connection, timeout) keeps
  it for a retry with the endpoint's ``threshold``/``backoff``.

Metrics (``quayside_origin_`` prefix): ``notification_events_total{endpoint,result}``
(queued, ignored, dropped: queue full or not writable), ``notification_deliveries_total
{endpoint,result}`` (ok, failed), ``notification_pending{endpoint}``.
A failure to queue never fails the request: it is logged and counted as dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from origin.metrics import OriginMetrics
from origin.notifications.events import EVENTS_MEDIA_TYPE, envelope
from origin.notifications.queue import DiskQueue
from origin.notifications.worker import QueueWorker
from regcore import USER_AGENT
from regcore.eventsconfig import EndpointConfig, NotificationsConfig

__all__ = ["DeliveryFailed", "EventHub", "Listener", "enqueue_offline"]

log = logging.getLogger("quayside.origin.events")

Listener = Callable[[Sequence[dict[str, Any]]], None]
"""Called (blocking, in a worker thread) with every batch of events the hub emits."""

_SYNCED_ACTIONS = frozenset({"push", "mount", "delete"})


class DeliveryFailed(Exception):
    """The endpoint answered with a status outside 2xx."""


def _wanted(endpoint: EndpointConfig, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if not endpoint.ignores(e["action"], e["target"].get("mediaType"))]


class _Endpoint:
    def __init__(self, config: EndpointConfig, queue: DiskQueue, hub: EventHub) -> None:
        self.config = config
        self.queue = queue
        self.session: aiohttp.ClientSession | None = None
        self.worker = QueueWorker(
            config.name,
            queue,
            self.send,
            threshold=config.threshold,
            backoff=config.backoff,
            on_outcome=hub.delivery_outcome(config.name),
        )

    async def send(self, item: bytes) -> None:
        """POST one event; raises DeliveryFailed / aiohttp errors / TimeoutError."""
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                headers={"User-Agent": USER_AGENT},
            )
        headers: list[tuple[str, str]] = [("Content-Type", EVENTS_MEDIA_TYPE)]
        for name, values in self.config.headers.items():
            headers.extend((name, v) for v in values)
        body = envelope([json.loads(item)])
        async with self.session.post(self.config.url, data=body, headers=headers) as resp:
            await resp.read()
            if not 200 <= resp.status < 300:
                raise DeliveryFailed(f"endpoint answered {resp.status}")

    async def close(self) -> None:
        await self.worker.close(grace=self.config.timeout + 1.0)
        if self.session is not None:
            await self.session.close()


class EventHub:
    """See the module docstring. ``metrics`` may be None (offline use)."""

    def __init__(
        self,
        config: NotificationsConfig,
        *,
        metrics: OriginMetrics | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.listeners: list[Listener] = list(listeners)
        self.endpoints = [
            _Endpoint(ep, DiskQueue(Path(config.directory) / ep.name, config.maxpending), self)
            for ep in config.active
        ]
        if metrics is not None:
            pending = metrics.gauge(
                "notification_pending", "Events queued on disk per endpoint", ["endpoint"]
            )
            for ep in self.endpoints:
                pending.labels(ep.config.name).set_function(ep.queue.__len__)

    @property
    def active(self) -> bool:
        """Whether emitting does anything (an endpoint or a listener)."""
        return bool(self.endpoints or self.listeners)

    def _count(self, name: str, endpoint: str, result: str, n: int = 1) -> None:
        if self.metrics is not None and n:
            doc = {
                "notification_events": "Events per endpoint by result (queued/ignored/dropped)",
                "notification_deliveries": "Delivery attempts per endpoint (ok/failed)",
            }[name]
            self.metrics.counter(name, doc, ["endpoint", "result"]).labels(endpoint, result).inc(n)

    def delivery_outcome(self, endpoint: str) -> Callable[[str, BaseException | None], None]:
        def outcome(result: str, error: BaseException | None) -> None:
            self._count("notification_deliveries", endpoint, result)

        return outcome

    def emit_blocking(self, events: Sequence[dict[str, Any]]) -> None:
        """Queue ``events`` for every endpoint and hand them to the listeners (blocking)."""
        sync = any(e["action"] in _SYNCED_ACTIONS for e in events)
        for ep in self.endpoints:
            wanted = _wanted(ep.config, events)
            self._count("notification_events", ep.config.name, "ignored", len(events) - len(wanted))
            if not wanted:
                continue
            try:
                items = [json.dumps(e, separators=(",", ":")).encode() for e in wanted]
                dropped = ep.queue.put(items, sync=sync)
            except OSError as exc:
                dropped = len(wanted)
                log.error(
                    "cannot queue notification events",
                    extra={"endpoint": ep.config.name, "error": str(exc), "events": dropped},
                )
            else:
                if dropped:
                    log.warning(
                        "notification queue full: events dropped",
                        extra={"endpoint": ep.config.name, "events": dropped},
                    )
            self._count("notification_events", ep.config.name, "queued", len(wanted) - dropped)
            self._count("notification_events", ep.config.name, "dropped", dropped)
        for listener in self.listeners:
            try:
                listener(events)
            except Exception:
                log.exception("event listener failed")

    async def emit(self, events: Sequence[dict[str, Any]]) -> None:
        """:meth:`emit_blocking` in a thread, then wake the endpoint workers."""
        if not events or not self.active:
            return
        await asyncio.to_thread(self.emit_blocking, events)
        for ep in self.endpoints:
            ep.worker.wake()

    def start(self) -> None:
        """Start the delivery workers (call from the application's loop)."""
        for ep in self.endpoints:
            ep.worker.start()

    async def close(self) -> None:
        """Stop the workers (each lets its attempt in flight finish)."""
        await asyncio.gather(*(ep.close() for ep in self.endpoints))


def enqueue_offline(config: NotificationsConfig, events: Sequence[dict[str, Any]]) -> None:
    """Queue events from outside the origin process (``quayside`` maintenance commands): a
    running origin's workers find them by polling. Blocking."""
    hub = EventHub(config)
    os.makedirs(config.directory, exist_ok=True)
    hub.emit_blocking(events)
