"""The edge's Prometheus counters, on the application's own :class:`CollectorRegistry`.

Every cache decision and upstream call is counted (STYLE rule 10). Names (namespace
``quayside_edge``; counters get ``_total`` in the exposition):

- ``cache_hits{kind}`` / ``cache_misses{kind}``: ``kind`` is ``blob`` or ``manifest``;
- ``bytes_served{source}``: body bytes sent to clients, ``source`` ``cache`` (sendfile),
  ``fill`` (streamed while a fill runs) or ``passthrough`` (see below);
- ``passthrough{reason}``: blob GETs served straight from the upstream without caching
  (:mod:`edge.passthrough`), ``reason`` ``too_large`` (larger than the whole cache) or
  ``no_space`` (no room freed in time); ``passthrough_bytes``: their body bytes sent;
  ``passthrough_failed``: those cut short (upstream broke, wrong digest or length);
- ``upstream_requests{upstream,method,status}``: every HTTP exchange with an upstream (token
  realms and redirect targets included; ``status`` is ``error`` when no answer came);
- ``upstream_bytes{upstream}``: response body bytes received from upstreams;
- ``stale_serves{upstream}``: tags answered with the last known digest because the upstream
  was down, hung, 5xx or 429;
- ``tag_cache{result}``: tag lookups: ``hit`` (within TTL), ``miss``, ``revalidated``
  (same digest), ``changed`` (new digest), ``failed`` (revalidation failed);
- ``auth_checks{result}``: upstream authorization checks for private upstreams
  (``allowed``, ``denied``, ``cached``);
- ``upstream_latency_seconds{upstream}``: time to response headers;
- ``manifest_reads{source}``: manifest bodies served from the edge's own store, ``source``
  ``memory`` (the in-memory LRU) or ``disk``; ``manifest_memory_bytes``: bytes of manifests
  held in memory (a gauge, read from the store passed to
  :meth:`EdgeMetrics.watch_manifest_memory`).

The fill machinery (edge/fill.py, edge/cache.py) registers its own collectors on the same
registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from urllib.parse import urlsplit

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edge.upstreamconfig import UpstreamConfig

NAMESPACE = "quayside_edge"


class EdgeMetrics:
    """The edge's counters. One instance per application; thread-safe (prometheus-client)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, labels, namespace=NAMESPACE, registry=registry)

        self.cache_hits = counter("cache_hits", "Requests answered from the local cache", ["kind"])
        self.cache_misses = counter(
            "cache_misses", "Requests the local cache could not answer", ["kind"]
        )
        self.bytes_served = counter("bytes_served", "Body bytes sent to clients", ["source"])
        self.passthrough = counter(
            "passthrough", "Blob GETs streamed from upstream without caching", ["reason"]
        )
        self.passthrough_bytes = counter(
            "passthrough_bytes", "Body bytes sent by pass-through blob responses", []
        )
        self.passthrough_failed = counter(
            "passthrough_failed", "Pass-through blob responses cut short (upstream or digest)", []
        )
        self.upstream_requests = counter(
            "upstream_requests", "HTTP exchanges with upstreams", ["upstream", "method", "status"]
        )
        self.upstream_bytes = counter(
            "upstream_bytes", "Body bytes received from upstreams", ["upstream"]
        )
        self.stale_serves = counter(
            "stale_serves",
            "Tags served with the last known digest while upstream failed",
            ["upstream"],
        )
        self.tag_cache = counter("tag_cache", "Tag cache lookups by outcome", ["result"])
        self.auth_checks = counter("auth_checks", "Upstream authorization checks", ["result"])
        self.upstream_latency = Histogram(
            "upstream_latency_seconds",
            "Time until upstream response headers",
            ["upstream"],
            namespace=NAMESPACE,
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.manifest_reads = counter(
            "manifest_reads",
            "Manifest bodies served from the cache, by where they were read (memory or disk)",
            ["source"],
        )
        self.manifest_memory_bytes = Gauge(
            "manifest_memory_bytes",
            "Bytes of manifests held in memory",
            namespace=NAMESPACE,
            registry=registry,
        )

    def watch_manifest_memory(self, bytes_used: Callable[[], float]) -> None:
        """Report ``bytes_used()`` as ``manifest_memory_bytes`` at every scrape."""
        self.manifest_memory_bytes.set_function(bytes_used)

    def auth_checked(self, result: str) -> None:
        """Count one private-upstream access check (``allowed``, ``denied``, ``cached``...)."""
        self.auth_checks.labels(result).inc()

    def shared_tag_cache_failed(self, op: str) -> None:
        """Count one failed call to the region's shared tag cache (``tag_cache{shared_error}``)."""
        self.tag_cache.labels("shared_error").inc()

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter sample (0.0 when never incremented); for tests and health."""
        v = self.registry.get_sample_value(f"{NAMESPACE}_{name}_total", labels)
        return 0.0 if v is None else v

    def trace_config(self, upstreams: tuple[UpstreamConfig, ...]) -> aiohttp.TraceConfig:
        """An aiohttp TraceConfig counting every request the upstream session makes.

        Requests are labelled with the upstream whose URL host they went to; token realms and
        redirect targets on other hosts are labelled ``other``.
        """
        hosts = {u.netloc: u.name for u in upstreams}
        trace = aiohttp.TraceConfig()

        def label(url: object) -> str:
            return hosts.get(urlsplit(str(url)).netloc.lower(), "other")

        async def on_start(
            session: aiohttp.ClientSession,
            ctx: SimpleNamespace,
            params: aiohttp.TraceRequestStartParams,
        ) -> None:
            ctx.t0 = time.perf_counter()
            ctx.upstream = label(params.url)

        async def on_end(
            session: aiohttp.ClientSession,
            ctx: SimpleNamespace,
            params: aiohttp.TraceRequestEndParams,
        ) -> None:
            self.upstream_requests.labels(
                ctx.upstream, params.method, str(params.response.status)
            ).inc()
            self.upstream_latency.labels(ctx.upstream).observe(time.perf_counter() - ctx.t0)

        async def on_exception(
            session: aiohttp.ClientSession,
            ctx: SimpleNamespace,
            params: aiohttp.TraceRequestExceptionParams,
        ) -> None:
            self.upstream_requests.labels(
                getattr(ctx, "upstream", "other"), params.method, "error"
            ).inc()

        async def on_chunk(
            session: aiohttp.ClientSession,
            ctx: SimpleNamespace,
            params: aiohttp.TraceResponseChunkReceivedParams,
        ) -> None:
            self.upstream_bytes.labels(label(params.url)).inc(len(params.chunk))

        async def on_redirect(
            session: aiohttp.ClientSession,
            ctx: SimpleNamespace,
            params: aiohttp.TraceRequestRedirectParams,
        ) -> None:
            self.upstream_requests.labels(
                ctx.upstream, params.method, str(params.response.status)
            ).inc()
            ctx.upstream = label(params.response.headers.get("Location", ""))

        trace.on_request_start.append(on_start)
        trace.on_request_end.append(on_end)
        trace.on_request_exception.append(on_exception)
        trace.on_response_chunk_received.append(on_chunk)
        trace.on_request_redirect.append(on_redirect)
        return trace
