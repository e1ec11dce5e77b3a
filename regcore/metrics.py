"""Prometheus metrics: one :class:`CollectorRegistry` per application (no global state).

``HttpMetrics`` counts requests by route and status and bytes in/out; servers add their own
counters on the same registry. :func:`process_metrics` adds what every Prometheus client
exports about its process (``process_*``: CPU seconds, resident memory, open descriptors;
``python_gc_*``), ``python_gc_frozen_objects`` (the start-up heap the server froze, see
:func:`regcore.serving.freeze_startup_heap`) and ``quayside_sendfile_offloaded_{calls,bytes}_total``
(file bodies whose range had to come from the disk, sent from a worker thread:
:mod:`regcore.zerocopy`). :func:`metrics_handler` serves the text exposition format.

The middleware keeps the labelled children it has used (up to :data:`MAX_CACHED_CHILDREN` per
metric; past that it asks ``labels()`` each time), so a request costs dictionary lookups rather
than prometheus-client's label validation and locking per metric.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from regcore import errors
from regcore.http import Handler
from regcore.zerocopy import OFFLOADED

MAX_CACHED_CHILDREN = 1024
METRICS_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry", CollectorRegistry)


def process_metrics(registry: CollectorRegistry) -> None:
    """Register the process collectors on ``registry`` (once per registry; see the module
    docstring). Raises ValueError when they are already there."""
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    Gauge(
        "python_gc_frozen_objects",
        "Objects moved out of the garbage collector's sight at start-up (gc.freeze)",
        registry=registry,
    ).set_function(gc.get_freeze_count)
    registry.register(_OffloadCollector())


class _OffloadCollector(Collector):
    """``quayside_sendfile_offloaded_calls_total`` / ``..._bytes_total``: sendfile calls run in
    a worker thread because their file range was not in the page cache, and their bytes
    (:data:`regcore.zerocopy.OFFLOADED`; process-wide, like ``process_*``)."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "quayside_sendfile_offloaded_calls",
            "sendfile calls run in a worker thread (file range not in the page cache)",
            value=OFFLOADED.calls,
        )
        yield CounterMetricFamily(
            "quayside_sendfile_offloaded_bytes",
            "Body bytes sent by sendfile calls run in a worker thread",
            value=OFFLOADED.bytes,
        )


class HttpMetrics:
    """``<namespace>_http_requests_total{method,route,status}``, ``..._http_response_bytes``
    and ``..._http_request_bytes{route}``, ``..._http_request_duration_seconds{route}`` (until
    the handler returns) and ``..._http_requests_in_flight``. ``route`` is the aiohttp route
    name (else its canonical path; ``unmatched`` when no resource matched)."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self.requests = Counter(
            "http_requests",
            "HTTP requests served",
            ["method", "route", "status"],
            namespace=namespace,
            registry=registry,
        )
        self.bytes_out = Counter(
            "http_response_bytes",
            "Response body bytes sent",
            ["route"],
            namespace=namespace,
            registry=registry,
        )
        self.bytes_in = Counter(
            "http_request_bytes",
            "Request body bytes received",
            ["route"],
            namespace=namespace,
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer (until the handler returns)",
            ["route"],
            namespace=namespace,
            registry=registry,
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
        )
        self.in_flight = Gauge(
            "http_requests_in_flight",
            "Requests being answered",
            namespace=namespace,
            registry=registry,
        )
        # Counted in a plain int by the middleware (event loop only), read at scrape time.
        self._in_flight = 0
        self.in_flight.set_function(lambda: self._in_flight)

    def middleware(self) -> web.middleware:
        requests: dict[tuple[str, str, int], Any] = {}
        latency: dict[str, Any] = {}
        bytes_in: dict[str, Any] = {}
        perf_counter = time.perf_counter

        @web.middleware
        async def _metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
            route = _route_name(request)
            self._in_flight += 1
            t0 = perf_counter()
            status = 500
            try:
                resp = await handler(request)
                status = resp.status
                return resp
            except (web.HTTPException, errors.RegistryError) as exc:
                status = exc.status  # what the error middleware will answer
                raise
            finally:
                self._in_flight -= 1
                elapsed = perf_counter() - t0
                child = latency.get(route)
                if child is None:
                    child = _cache(latency, route, self.latency.labels(route))
                child.observe(elapsed)
                method = request.method
                child = requests.get((method, route, status))
                if child is None:
                    child = self.requests.labels(method, route, str(status))
                    _cache(requests, (method, route, status), child)
                child.inc()
                if request.content_length:
                    child = bytes_in.get(route)
                    if child is None:
                        child = _cache(bytes_in, route, self.bytes_in.labels(route))
                    child.inc(request.content_length)

        return _metrics


def _cache(children: dict[Any, Any], key: Any, child: Any) -> Any:
    """Remember ``child`` under ``key`` while the cache is below its bound; returns it."""
    if len(children) < MAX_CACHED_CHILDREN:
        children[key] = child
    return child


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    if info is None:
        return "unmatched"
    return info.name or info.canonical


def metrics_handler(registry: CollectorRegistry) -> Handler:
    async def _handler(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return _handler


def metrics_app(registry: CollectorRegistry, path: str = "/metrics") -> web.Application:
    """An application that serves ``registry`` at ``path`` (GET and HEAD) and 404 elsewhere:
    the debug listener's (``http.debug.prometheus``)."""
    app = web.Application()
    app.router.add_get(path, metrics_handler(registry), name="metrics")
    return app
