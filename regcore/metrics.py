"""Prometheus metrics: one :class:`CollectorRegistry` per application (no global state).

``HttpMetrics`` counts requests by route and status and bytes in/out; servers add their own
counters on the same registry. :func:`metrics_handler` serves the text exposition format.
"""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from regcore.http import Handler

METRICS_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry", CollectorRegistry)


class HttpMetrics:
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

    def middleware(self) -> web.middleware:
        @web.middleware
        async def _metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
            route = _route_name(request)
            self.in_flight.inc()
            t0 = time.perf_counter()
            status = 500
            try:
                resp = await handler(request)
                status = resp.status
                return resp
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                self.in_flight.dec()
                self.latency.labels(route).observe(time.perf_counter() - t0)
                self.requests.labels(request.method, route, str(status)).inc()
                if request.content_length:
                    self.bytes_in.labels(route).inc(request.content_length)

        return _metrics


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
