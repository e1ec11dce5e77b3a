"""The fill and cache collectors of one edge node (namespace ``quayside_edge``).

:class:`EdgeFillMetrics` is built once per node and passed to :class:`edge.fill.FillManager`
(which binds the cache gauges to its :class:`edge.cache.BlobCache`); fills count through
:meth:`EdgeFillMetrics.count`. Counters end in ``_total`` on the wire.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from edge.cache import BlobCache
from regcore.digest import Digest


class EdgeFillMetrics:
    """Fill and cache collectors (namespace ``quayside_edge``; counters end in ``_total``).

    fills_started, fills_joined, fills_remote, fills_failed{reason}, fill_bytes{source},
    fill_bodies{reader}, fill_holdbacks_ended, cache_evictions, cache_evicted_bytes, redis_fallbacks, lock_takeovers (counters);
    fills_active, cache_bytes, cache_reserved_bytes, cache_entries (gauges).
    """

    def __init__(self, registry: CollectorRegistry, namespace: str = "quayside_edge") -> None:
        self.registry = registry
        self.namespace = namespace

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, namespace=namespace, registry=registry)

        self.fills_started = counter("fills_started", "Fills run by this node (any source)")
        self.fills_joined = counter(
            "fills_joined", "Requests that joined a fill in progress on this node"
        )
        self.fills_remote = counter(
            "fills_remote", "Fills that streamed from the peer owning the region lock"
        )
        self.fills_failed = counter(
            "fills_failed", "Fills that failed (nothing cached)", ("reason",)
        )
        self.fill_bytes = counter("fill_bytes", "Bytes written by fills", ("source",))
        self.fill_bodies = counter(
            "fill_bodies",
            "Source bodies read by fills, by reader (socket: the fill's own thread read the "
            "connection; loop: aiohttp's reader on the event loop)",
            ("reader",),
        )
        self.fill_holdbacks_ended = counter(
            "fill_holdbacks_ended",
            "Fills that stopped waiting for a reader behind their live window (it waited "
            "HOLD_GRACE for a slot); such readers read the rest from the cache file",
        )
        self.evictions = counter("cache_evictions", "Blobs evicted from the cache")
        self.evicted_bytes = counter("cache_evicted_bytes", "Bytes evicted from the cache")
        self.redis_fallbacks = counter(
            "redis_fallbacks", "Fills run node-locally because Redis was unavailable"
        )
        self.lock_takeovers = counter("lock_takeovers", "Fills taken over from a failed owner node")
        self.fills_active = gauge("fills_active", "Fills in progress on this node")
        self.cache_bytes = gauge("cache_bytes", "Bytes of committed blobs in the cache")
        self.cache_reserved = gauge("cache_reserved_bytes", "Bytes reserved by fills in progress")
        self.cache_entries = gauge("cache_entries", "Blobs in the cache")

    def bind_cache(self, cache: BlobCache) -> None:
        self.cache_bytes.set_function(lambda: cache.bytes_used)
        self.cache_reserved.set_function(lambda: cache.bytes_reserved)
        self.cache_entries.set_function(lambda: cache.entries)
        cache.add_evict_listener(self._on_evict)

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        """Increment counter ``name`` (an attribute above, e.g. ``fills_failed``) by ``amount``."""
        counter: Counter = getattr(self, name)
        (counter.labels(**labels) if labels else counter).inc(amount)

    def _on_evict(self, digest: Digest, size: int) -> None:
        self.evictions.inc()
        self.evicted_bytes.inc(size)

    def value(self, name: str, **labels: str) -> float:
        """A sample's value (counters: pass the name without ``_total``); 0.0 when absent."""
        for suffix in ("_total", ""):
            v = self.registry.get_sample_value(f"{self.namespace}_{name}{suffix}", labels)
            if v is not None:
                return v
        return 0.0
