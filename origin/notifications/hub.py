"""The origin's event hub: every event goes to each endpoint's on-disk queue and to listeners.

One :class:`EventHub` per application (built by :func:`origin.notifications.install` from
:class:`~regcore.eventsconfig.NotificationsConfig`). :meth:`EventHub.emit` is the only way in
(the events middleware calls it; offline tools use :func:`enqueue_offline`). Per enabled
endpoint, events it does not ignore (``ignore.actions``, ``ignore.mediatypes`` /
``ignoredmediatypes`` on the target's media type) are queued in ``<directory>/<endpoint>/``
(:class:`~origin.notifications.queue.DiskQueue`, one envelope per file):

- push, mount and delete events: each in its own envelope (as registry:2 sends them), written
  and fsynced *before the request is answered*, so an answered change's event survives a
  crash, a SIGKILL or a power cut;
- pull events (the bulk of the traffic) are collected in memory and written every
  ``FLUSH_INTERVAL`` (50 ms), up to ``PULL_BATCH`` events per envelope (the envelope format
  allows several), without fsync: a pull costs no disk write of its own. A graceful stop
  writes them; a crash of the process loses at most the last 50 ms of pull events.
  Buffered pulls are always written before a following change event.

Listeners (replication) get every push, mount and delete event, in the same thread. Each
endpoint's :class:`~origin.notifications.worker.QueueWorker` POSTs the envelopes in order with
the endpoint's headers and ``timeout``; a 2xx answer removes the envelope from the queue,
anything else (other status, refused connection, timeout, TLS failure) keeps it for a retry
with the endpoint's ``threshold``/``backoff``.

Redirects: a 307/308 to the endpoint's own origin (scheme, host, port) is followed (up to
``MAX_REDIRECTS`` hops, same headers and body); any other redirect counts as a failed
delivery, so the configured headers (tokens) and the events never reach a host the operator
did not name. (registry:2 follows every redirect, turning 301/302/303 into a GET without
the events.) TLS: the endpoint's ``tls`` settings become one set of SSL contexts when the hub
starts (:func:`regcore.tlsclient.client_contexts`; ``tls.insecureskipverify`` is warned about
there by name).

Metrics (``quayside_origin_`` prefix): ``notification_events_total{endpoint,result}``
(queued, ignored, dropped: queue or buffer full, or disk not writable),
``notification_deliveries_total{endpoint,result}`` (ok, failed: one per envelope POST),
``notification_pending{endpoint}`` (envelopes on disk). A failure to queue never fails the
request: it is logged and counted as dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from origin.metrics import OriginMetrics
from origin.notifications.events import EVENTS_MEDIA_TYPE, envelope
from origin.notifications.queue import DiskQueue
from origin.notifications.worker import QueueWorker
from regcore import USER_AGENT
from regcore.background import cancel_and_wait
from regcore.client.auth import same_origin
from regcore.eventsconfig import EndpointConfig, NotificationsConfig
from regcore.tlsclient import ClientTLSContexts, client_contexts, warn_insecure

__all__ = ["DeliveryFailed", "EventHub", "Listener", "enqueue_offline"]

log = logging.getLogger("quayside.origin.events")

Listener = Callable[[Sequence[dict[str, Any]]], None]
"""Called (blocking, in a worker thread) with every batch of push, mount and delete events."""

PULL_BATCH = 100
"""Pull events per envelope at most."""
MAX_BUFFERED = 10 * PULL_BATCH
"""Pull events held in memory per endpoint at most (more are dropped and counted)."""
FLUSH_INTERVAL = 0.05
"""Seconds between writes of buffered pull events."""
MAX_REDIRECTS = 5
"""Same-origin 307/308 hops followed per delivery at most."""


class DeliveryFailed(Exception):
    """The endpoint answered with a status outside 2xx."""


def _wanted(endpoint: EndpointConfig, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if not endpoint.ignores(e["action"], e["target"].get("mediaType"))]


class _Endpoint:
    def __init__(self, config: EndpointConfig, queue: DiskQueue, hub: EventHub) -> None:
        self.config = config
        self.queue = queue
        self.buffer: list[dict[str, Any]] = []  # pull events not yet written (hub's lock)
        self.session: aiohttp.ClientSession | None = None
        self.tls: ClientTLSContexts | None = None  # set by EventHub.start
        self.worker = QueueWorker(
            config.name,
            queue,
            self.send,
            threshold=config.threshold,
            backoff=config.backoff,
            on_outcome=hub.delivery_outcome(config.name),
        )

    async def send(self, item: bytes) -> None:
        """POST one queued envelope, following same-origin 307/308 redirects only (see the
        module docstring); raises DeliveryFailed / aiohttp errors / TimeoutError."""
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                headers={"User-Agent": USER_AGENT},
            )
        headers: list[tuple[str, str]] = [("Content-Type", EVENTS_MEDIA_TYPE)]
        for name, values in self.config.headers.items():
            headers.extend((name, v) for v in values)
        home = url = URL(self.config.url)
        for _hop in range(MAX_REDIRECTS + 1):
            async with self.session.post(
                url, data=item, headers=headers, allow_redirects=False, **self._tls_options(url)
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return
                location = resp.headers.get("Location")
                if resp.status not in (307, 308) or not location:
                    raise DeliveryFailed(f"endpoint answered {resp.status}")
                url = resp.url.join(URL(location))
                if not same_origin(url, home):
                    raise DeliveryFailed(
                        f"endpoint answered {resp.status} to another origin (not followed)"
                    )
        raise DeliveryFailed(f"more than {MAX_REDIRECTS} redirects")

    def _tls_options(self, url: URL) -> dict[str, Any]:
        if self.tls is None or url.scheme != "https":
            return {}
        return self.tls.request_options(own_origin=True)

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
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.listeners: list[Listener] = list(listeners)
        self.flush_interval = flush_interval
        self.endpoints = [
            _Endpoint(ep, DiskQueue(Path(config.directory) / ep.name, config.maxpending), self)
            for ep in config.active
        ]
        self._lock = threading.Lock()
        self._flush_now = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        if metrics is not None:
            pending = metrics.gauge(
                "notification_pending", "Envelopes queued on disk per endpoint", ["endpoint"]
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

    def _put(self, ep: _Endpoint, envelopes: list[bytes], events: int, *, sync: bool) -> None:
        """Write envelopes holding ``events`` events to the endpoint's queue; count them."""
        try:
            dropped = ep.queue.put(envelopes, sync=sync)
        except OSError as exc:
            dropped = len(envelopes)
            log.error(
                "cannot queue notification events",
                extra={"endpoint": ep.config.name, "error": str(exc)},
            )
        if dropped:
            log.warning(
                "notification queue full: events dropped",
                extra={"endpoint": ep.config.name, "envelopes": dropped},
            )
        lost = events if dropped == len(envelopes) else dropped
        self._count("notification_events", ep.config.name, "queued", events - lost)
        self._count("notification_events", ep.config.name, "dropped", lost)

    def _buffer(self, events: Sequence[dict[str, Any]]) -> bool:
        """Add pull events to the endpoints' buffers; True when a buffer should be flushed."""
        full = False
        with self._lock:
            for ep in self.endpoints:
                wanted = _wanted(ep.config, events)
                ignored = len(events) - len(wanted)
                self._count("notification_events", ep.config.name, "ignored", ignored)
                room = MAX_BUFFERED - len(ep.buffer)
                ep.buffer.extend(wanted[:room])
                self._count("notification_events", ep.config.name, "dropped", len(wanted[room:]))
                full = full or len(ep.buffer) >= PULL_BATCH
        return full

    def flush_blocking(self) -> None:
        """Write the buffered pull events, one envelope per ``PULL_BATCH``. Blocking."""
        with self._lock:
            taken = [(ep, ep.buffer) for ep in self.endpoints if ep.buffer]
            for ep, _ in taken:
                ep.buffer = []
        for ep, events in taken:
            batches = [events[i : i + PULL_BATCH] for i in range(0, len(events), PULL_BATCH)]
            self._put(ep, [envelope(b) for b in batches], len(events), sync=False)

    def emit_blocking(self, events: Sequence[dict[str, Any]]) -> None:
        """Queue ``events`` (each in its own envelope, fsynced) after the buffered pulls, and
        hand them to the listeners. Blocking."""
        self.flush_blocking()
        for ep in self.endpoints:
            wanted = _wanted(ep.config, events)
            self._count("notification_events", ep.config.name, "ignored", len(events) - len(wanted))
            if wanted:
                self._put(ep, [envelope([e]) for e in wanted], len(wanted), sync=True)
        for listener in self.listeners:
            try:
                listener(events)
            except Exception:
                log.exception("event listener failed")

    async def emit(self, events: Sequence[dict[str, Any]]) -> None:
        """Queue ``events`` (see the module docstring for pulls), then wake the workers."""
        if not events or not self.active:
            return
        if all(e["action"] == "pull" for e in events):
            if self._buffer(events) or self._flusher is None:
                self._flush_now.set()
            return
        await asyncio.to_thread(self.emit_blocking, events)
        for ep in self.endpoints:
            ep.worker.wake()

    async def _flush_loop(self) -> None:
        while True:
            # asyncio.wait, not wait_for: Python 3.11's wait_for can swallow a cancellation
            # that arrives as the event is set, and close() would then wait a whole interval.
            waiter = asyncio.ensure_future(self._flush_now.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.flush_interval)
            finally:
                waiter.cancel()
            self._flush_now.clear()
            if any(ep.buffer for ep in self.endpoints):
                await asyncio.to_thread(self.flush_blocking)
                for ep in self.endpoints:
                    ep.worker.wake()

    def start(self) -> None:
        """Build each endpoint's TLS contexts (warning about disabled verification), then start
        the delivery workers and the pull flusher (call from the application's loop)."""
        for ep in self.endpoints:
            if ep.tls is None and ep.config.tls is not None:
                warn_insecure(log, "notification endpoint", ep.config.name, ep.config.tls)
                ep.tls = client_contexts(ep.config.tls)
            ep.worker.start()
        if self.endpoints and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="notification-flush")

    async def close(self) -> None:
        """Write the buffered pulls, then stop the workers (each lets its attempt in flight
        finish)."""
        if self._flusher is not None:
            await cancel_and_wait(self._flusher)
            self._flusher = None
        await asyncio.to_thread(self.flush_blocking)
        await asyncio.gather(*(ep.close() for ep in self.endpoints))


def enqueue_offline(config: NotificationsConfig, events: Sequence[dict[str, Any]]) -> None:
    """Queue events from outside the origin process (``quayside`` maintenance commands): a
    running origin's workers find them by polling. Blocking."""
    hub = EventHub(config)
    os.makedirs(config.directory, exist_ok=True)
    hub.emit_blocking(events)
