"""Admin endpoints the ``quayside`` CLI uses to run maintenance inside a serving origin, and
the namespace usage metrics.

Routes (each requires the header ``X-Quayside-Admin-Token`` equal to the root's
``admin.token``, see :mod:`origin.rootlock`; missing: 401 ``UNAUTHORIZED``, wrong: 403
``DENIED``, compared in constant time)::

    POST /_quayside/admin/gc?dry_run=1&grace=3600&delete_untagged=0
    POST /_quayside/admin/retention?dry_run=1
    POST /_quayside/admin/pulls/flush          -> {"flushed": N}
    GET  /_quayside/admin/usage                -> {"namespaces": {ns: {"bytes", "limit"}}}

``gc`` and ``retention`` answer ``200`` with ``application/x-ndjson``: a progress line
(``{"phase", "done", "total"}``) at most every 0.25 s while the run goes, then one
``{"report": {...}}`` line (or ``{"error": "..."}``). If the client goes away, the run is
cancelled (both are safe to stop at any point and to run again).

Metrics (gauges read at scrape time)::

    quayside_origin_namespace_bytes{namespace}         unique blob bytes stored
    quayside_origin_namespace_quota_bytes{namespace}   configured limit (namespaces with one)
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from origin import state
from origin.progress import Progress
from origin.rootlock import TOKEN_HEADER
from regcore import errors
from regcore.opsconfig import parse_age

PREFIX = "/_quayside/admin"


class InvalidParameter(errors.RegistryError):
    """400: a query parameter of an admin endpoint does not parse."""

    code = "UNSUPPORTED"
    status = 400
    message = "invalid parameter"


_TRUE = {"1", "true", "yes", "on"}


def _ops(request: web.Request) -> Any:
    ops = request.app[state.OPS]
    token = request.headers.get(TOKEN_HEADER)
    if not token:
        raise errors.Unauthorized(message=f"admin endpoint: {TOKEN_HEADER} header required")
    if ops.token is None or not hmac.compare_digest(token.encode(), ops.token.encode()):
        raise errors.Denied(message="admin endpoint: wrong admin token")
    return ops


def _flag(request: web.Request, key: str, default: bool = False) -> bool:
    value = request.query.get(key)
    return default if value is None else value.lower() in _TRUE


async def _stream(
    request: web.Request, job: Callable[[Progress], Awaitable[Any]]
) -> web.StreamResponse:
    progress = Progress()
    task = asyncio.ensure_future(job(progress))
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson"})
    try:
        await resp.prepare(request)
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            await resp.write(json.dumps(progress.snapshot()).encode() + b"\n")
        try:
            line: dict[str, Any] = {"report": task.result().to_dict()}
        except errors.RegistryError as exc:
            line = {"error": exc.msg}
        except Exception as exc:
            line = {"error": f"{type(exc).__name__}: {exc}"}
        await resp.write(json.dumps(line).encode() + b"\n")
        await resp.write_eof()
    finally:
        if not task.done():  # client went away: stop the run (safe at any point)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return resp


async def run_gc(request: web.Request) -> web.StreamResponse:
    ops = _ops(request)
    try:
        grace = parse_age(request.query.get("grace", str(ops.config.gc.grace)))
    except ValueError as exc:
        raise InvalidParameter({"grace": str(exc)}, message="invalid grace") from None
    dry_run = _flag(request, "dry_run")
    delete_untagged = _flag(request, "delete_untagged", ops.config.gc.delete_untagged)
    return await _stream(
        request,
        lambda p: ops.run_gc(
            dry_run=dry_run, grace=grace, delete_untagged=delete_untagged, progress=p
        ),
    )


async def run_retention(request: web.Request) -> web.StreamResponse:
    ops = _ops(request)
    dry_run = _flag(request, "dry_run")
    return await _stream(request, lambda p: ops.run_retention(dry_run=dry_run, progress=p))


async def flush_pulls(request: web.Request) -> web.Response:
    ops = _ops(request)
    return web.json_response({"flushed": await ops.pulls.flush()})


async def usage(request: web.Request) -> web.Response:
    ops = _ops(request)
    snapshot = await ops.refresh_usage()
    out = {}
    for ns, used in sorted(snapshot.items()):
        limit = ops.quotas.limit(ns)
        out[ns] = {"bytes": used, "limit": limit[1] if limit else None}
    return web.json_response({"namespaces": out})


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/gc", run_gc, name="admin_gc")
    app.router.add_post(f"{PREFIX}/retention", run_retention, name="admin_retention")
    app.router.add_post(f"{PREFIX}/pulls/flush", flush_pulls, name="admin_pulls_flush")
    app.router.add_get(f"{PREFIX}/usage", usage, name="admin_usage")


class _UsageCollector(Collector):
    def __init__(self, ops: Any) -> None:
        self.ops = ops

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self.ops.quotas.snapshot()
        stored = GaugeMetricFamily(
            "quayside_origin_namespace_bytes",
            "Unique blob bytes stored per namespace (layers shared within it counted once)",
            labels=["namespace"],
        )
        quota = GaugeMetricFamily(
            "quayside_origin_namespace_quota_bytes",
            "Configured storage quota per namespace",
            labels=["namespace"],
        )
        for ns, used in sorted(snapshot.items()):
            stored.add_metric([ns], float(used))
            limit = self.ops.quotas.limit(ns)
            if limit is not None:
                quota.add_metric([ns], float(limit[1]))
        yield stored
        yield quota


def register_metrics(ops: Any) -> None:
    ops.metrics.registry.register(_UsageCollector(ops))
