"""Both servers export their process figures and froze their start-up heap.

``process_*`` and ``python_gc_*`` are what operators expect from any Prometheus client (the
dashboards' memory and CPU panels); ``python_gc_frozen_objects`` shows that the server moved
its start-up heap out of the collector's sight (:func:`regcore.serving.freeze_startup_heap`):
without it a full collection walks every imported module's objects again while a fill runs
(measured: longer than hashing a 200 MiB blob).
"""

from __future__ import annotations

from harness.servers import QuaysideServer, ServerGroup


def _check(server: QuaysideServer) -> None:
    samples = server.metrics()
    assert server.metric("python_gc_frozen_objects", samples) > 10_000  # imports + the app
    assert server.metric("process_resident_memory_bytes", samples) > 10 << 20
    assert server.metric("process_cpu_seconds", samples) > 0
    assert server.metric("process_open_fds", samples) > 0
    collections = [n for (n, _labels) in samples if n == "python_gc_collections_total"]
    assert len(collections) == 3  # one per generation


def test_origin_and_edge_export_process_metrics_and_a_frozen_startup_heap(
    servers: ServerGroup,
) -> None:
    origin = servers.origin()
    edge = servers.edge({"origin": origin.url})
    _check(origin)
    _check(edge)
