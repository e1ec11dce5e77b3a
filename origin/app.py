"""The origin's aiohttp application: wiring only.

``create_app(config)`` builds the layout, blob store, repositories, upload manager and metrics,
stores them under the keys of :mod:`origin.state`, installs the middlewares and registers every
route module (each exposes ``add_routes(app)``).

Behaviour owned here:
- ``GET``/``HEAD /v2/``: 200 ``{}`` with ``Docker-Distribution-API-Version: registry/2.0``.
- ``/metrics`` (Prometheus text; on the ``http.debug`` listener instead when that serves it,
  see :mod:`origin.__main__`), ``/healthz`` and ``/readyz`` (:mod:`origin.health`: 503
  when the storage root is not writable / not readable; read-only mode writes nothing).
- ``http.headers`` added to every answer that does not set them; ``health.storagedriver``
  (:mod:`origin.storagewatch`): 503 for everything but health and metrics while failing.
- Read-only mode (``storage.maintenance.readonly.enabled``): every ``POST``/``PUT``/``PATCH``/
  ``DELETE`` under ``/v2/`` answers 405 ``UNSUPPORTED``; reads keep working.
- Access control (:mod:`origin.authz`, one middleware for every route; parts built by
  :func:`origin.access.build_access_control` from ``config.auth``) and, when enabled, the
  token service (:mod:`origin.token`).
- ``Expect: 100-continue`` on the routes that take a blob or manifest body: the 100 is sent
  only when the handler reads the body, so access control, read-only mode, quotas and the
  handlers' own checks answer their refusal instead of a 100 (:mod:`regcore.expectcontinue`;
  other routes keep aiohttp's immediate 100).
- The web UI at ``/ui/`` (:mod:`origin.ui`), behind the same users and roles.
- Registry events (:mod:`origin.notifications`: webhooks and replication), inside access
  control, only when configured.
- Start-up: temp files left by a crash are removed (``store.recover()`` in a thread) before the
  first request; stale upload sessions are purged by a background task (per
  ``storage.maintenance.uploadpurging``), cancelled and awaited at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from origin import (
    blobs,
    catalog,
    health,
    manifests,
    notifications,
    ops,
    referrers,
    state,
    storagewatch,
    tags,
    token,
    uploads,
)
from origin.access import ACCESS, build_access_control
from origin.authz import access_middleware
from origin.metrics import OriginMetrics
from origin.opsevents import AuditSink, audit_log_sink, log_sink
from origin.policy import install as install_policies
from origin.repository import Repositories
from origin.ui import install as install_ui
from regcore import errors
from regcore.background import cancel_and_wait
from regcore.expectcontinue import continue_middleware
from regcore.http import API_VERSION_HEADER, Handler, on_prepare_api_header, standard_middlewares
from regcore.metrics import METRICS_REGISTRY, metrics_handler
from regcore.storage.blobstore import FilesystemBlobStore
from regcore.storage.interfaces import BlobStore
from regcore.storage.layout import Layout

log = logging.getLogger("quayside.origin")

# Every handler module exposes add_routes(app); uploads before blobs (more specific paths).
ROUTE_MODULES = (uploads, blobs, manifests, tags, catalog, referrers)
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def create_app(
    config: Any,
    *,
    store: BlobStore | None = None,
    clock: Callable[[], float] = time.time,
    registry: CollectorRegistry | None = None,
    audit: AuditSink | None = None,
    events: AuditSink = log_sink,
) -> web.Application:
    """Build the origin application for ``config`` (a :class:`regcore.config.OriginConfig`).

    ``store`` (any :class:`~regcore.storage.interfaces.BlobStore`) defaults to a filesystem
    store on ``config.storage.rootdirectory``; repository links, tags and upload sessions stay
    under that root whatever the store. ``clock`` drives upload ``startedat`` and purging;
    ``registry`` receives the metrics (a fresh one by default); ``audit``/``events`` receive
    maintenance and policy events (:mod:`origin.ops`; ``audit`` defaults to the audit trail
    when ``quayside.audit`` is enabled, else the log). Nothing touches the network; the
    storage directories are created.
    """
    layout = Layout(config.storage.rootdirectory)
    store = store if store is not None else FilesystemBlobStore(layout)
    repos = Repositories(layout, store)
    metrics = OriginMetrics(registry)
    readonly = bool(config.storage.maintenance.readonly)

    app = web.Application(
        middlewares=[
            metrics.http.middleware(),
            continue_middleware,  # outside the error rendering: sees every answer
            *standard_middlewares(),
            *storagewatch.middlewares(config),  # health.storagedriver: 503 while failing
            access_middleware,
            *notifications.middlewares(config),
            _readonly_middleware,
        ],
        client_max_size=max(config.limits.max_manifest_bytes, 1 << 20) + 1,
    )
    app[state.CONFIG] = config
    app[ACCESS] = build_access_control(config.auth)
    app[state.LAYOUT] = layout
    app[state.STORE] = store
    app[state.REPOS] = repos
    app[state.METRICS] = metrics
    app[METRICS_REGISTRY] = metrics.registry
    app[state.READONLY] = readonly
    app[state.DELETE_ENABLED] = bool(config.storage.delete_enabled)
    app[state.MAX_MANIFEST_BYTES] = int(config.limits.max_manifest_bytes)
    trail = app[ACCESS].audit
    if audit is None:
        audit = audit_log_sink(trail) if trail.config.enabled else log_sink
    hooks = ops.install(app, config.ops, clock=clock, audit=audit, events=events)
    app[state.UPLOADS] = uploads.Uploads(
        layout,
        store,
        repos,
        metrics=metrics,
        clock=clock,
        max_blob_bytes=int(config.limits.max_blob_bytes),
        commit_hook=hooks,
        quotas=hooks.quotas,
    )

    install_policies(app, config, metrics)  # signature / scan policies (origin/policy.py)
    storagewatch.install(app, config, layout)
    app.on_response_prepare.append(on_prepare_api_header)
    if config.http.headers:
        app.on_response_prepare.append(_configured_headers)
    app.on_response_prepare.append(_count_bytes_out)
    app.cleanup_ctx.append(_lifecycle)
    # Events, webhooks, replication (if configured); after _lifecycle, so they stop before the
    # audit log closes.
    notifications.install(app, config, metrics)

    base = app.router.add_resource("/v2/", name="base")
    base.add_route("GET", _base)
    base.add_route("HEAD", _base)
    if config.metrics_on_main_port:  # else off, or on the http.debug listener (__main__)
        app.router.add_get("/metrics", metrics_handler(metrics.registry), name="metrics")
    health.add_routes(app)

    for module in ROUTE_MODULES:
        module.add_routes(app)
    if config.auth.tokenservice.enabled:
        token.add_routes(app)
    install_ui(app, config)  # the web UI at /ui/ (origin/ui/), same authorizer as the API
    return app


async def _base(request: web.Request) -> web.Response:
    return web.json_response({}, headers=dict([API_VERSION_HEADER]))


@web.middleware
async def _readonly_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (
        request.method in _WRITE_METHODS
        and request.path.startswith("/v2/")
        and request.app[state.READONLY]
    ):
        raise errors.ReadOnly(f"{request.method} refused")
    return await handler(request)


async def _configured_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``http.headers``: each configured header on every answer that does not set it."""
    for name, values in request.app[state.CONFIG].http.headers.items():
        if name not in response.headers:
            for value in values:
                response.headers.add(name, value)


async def _count_bytes_out(request: web.Request, response: web.StreamResponse) -> None:
    if request.method == "HEAD":
        return
    length = response.content_length
    if length:
        metrics: OriginMetrics = request.app[state.METRICS]
        route = request.match_info.route.resource
        name = (route.name or route.canonical) if route is not None else "unmatched"
        metrics.http.bytes_out.labels(name).inc(length)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    store = app[state.STORE]
    removed = await asyncio.to_thread(store.recover)
    if removed:
        log.info("removed temp files left by a crash", extra={"count": removed})
    tasks: list[asyncio.Task[None]] = []
    purging = app[state.CONFIG].storage.maintenance.uploadpurging
    if purging.enabled and not app[state.READONLY]:
        tasks.append(
            asyncio.create_task(
                app[state.UPLOADS].purge_loop(purging.age, purging.interval, dryrun=purging.dryrun),
                name="origin-upload-purge",
            )
        )
    try:
        yield
    finally:
        app[ACCESS].close()
        await cancel_and_wait(*tasks)
