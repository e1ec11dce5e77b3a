"""The origin's Prometheus metrics: HTTP counters plus what the push path does.

One :class:`OriginMetrics` per application, on that application's own
:class:`~prometheus_client.CollectorRegistry` (no global registry, so two apps in one test
process never collide). Handler modules reach it through ``request.app[state.METRICS]``.

Names (namespace ``quayside_origin``)::

    quayside_origin_http_requests_total{method,route,status}
    quayside_origin_http_request_bytes_total{route}      request Content-Length
    quayside_origin_http_response_bytes_total{route}     response Content-Length (not HEAD)
    quayside_origin_upload_sessions_started_total
    quayside_origin_upload_sessions_completed_total
    quayside_origin_upload_sessions_cancelled_total{reason}   client|digest_invalid|purged
    quayside_origin_upload_bytes_total                   blob bytes received by uploads
    quayside_origin_blob_bytes_served_total              blob bytes sent by GET (incl. ranges)
    quayside_origin_blobs_committed_total{source}        upload|monolithic
    quayside_origin_blobs_mounted_total
    quayside_origin_blobs_deleted_total                  repository links removed

Operations (registered by origin.ops / origin.admin on the same registry)::

    quayside_origin_gc_runs_total{mode}                  dry_run|delete
    quayside_origin_gc_{blobs,bytes,manifests}_deleted_total, _gc_links_pruned_total,
        _gc_spared_total
    quayside_origin_retention_deletions_total{kind}      tag|manifest
    quayside_origin_immutability_denials_total
    quayside_origin_quota_denials_total
    quayside_origin_namespace_bytes{namespace}           gauge: unique blob bytes stored
    quayside_origin_namespace_quota_bytes{namespace}     gauge: configured quota

Other modules register further metrics with :meth:`OriginMetrics.counter` and
:meth:`OriginMetrics.gauge` (get-or-create, safe to call on every request).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from regcore.metrics import HttpMetrics, process_metrics

NAMESPACE = "quayside_origin"


class OriginMetrics:
    """Counters for one origin application. Not shared between applications."""

    def __init__(
        self, registry: CollectorRegistry | None = None, namespace: str = NAMESPACE
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.namespace = namespace
        self.http = HttpMetrics(self.registry, namespace)
        process_metrics(self.registry)
        self._extra: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        c = self._counter
        self.uploads_started = c("upload_sessions_started", "Upload sessions opened (POST)")
        self.uploads_completed = c("upload_sessions_completed", "Upload sessions committed (PUT)")
        self.uploads_cancelled = c(
            "upload_sessions_cancelled", "Upload sessions ended without a blob", ["reason"]
        )
        self.upload_bytes = c(
            "upload_bytes", "Blob bytes received by uploads (PATCH/PUT/POST bodies)"
        )
        self.blob_bytes_served = c("blob_bytes_served", "Blob bytes sent by blob GETs")
        self.blobs_committed = c("blobs_committed", "Blobs committed to the store", ["source"])
        self.blobs_mounted = c("blobs_mounted", "Blobs linked by cross-repository mount")
        self.blobs_deleted = c("blobs_deleted", "Blob links removed from repositories")

    def _counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        counter = Counter(name, doc, list(labels), namespace=self.namespace, registry=self.registry)
        self._extra[name] = counter
        return counter

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        """Get or create a counter ``<namespace>_<name>_total`` on this app's registry."""
        existing = self._extra.get(name)
        if existing is not None:
            return existing
        return self._counter(name, doc, labels)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        """Get or create a gauge ``<namespace>_<name>`` on this app's registry."""
        existing = self._gauges.get(name)
        if existing is None:
            existing = Gauge(
                name, doc, list(labels), namespace=self.namespace, registry=self.registry
            )
            self._gauges[name] = existing
        return existing

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of ``<namespace>_<name>_total`` (0.0 if never set); for tests."""
        full = f"{self.namespace}_{name}_total"
        got = self.registry.get_sample_value(full, labels or {})
        return float(got or 0.0)
