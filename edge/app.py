"""The edge's aiohttp application: wiring only (handlers live in blobs and manifests).

``create_app(config, *, cache=None, fills=None, clients=None, clock=time.monotonic,
registry=None)`` builds the app; resources it creates itself are opened and closed in
``cleanup_ctx`` in this order (closed in reverse):

1. the upstream session and one client per upstream (:mod:`edge.upstreams`), unless
   ``clients`` (name -> RegistryClient) is given;
2. the Redis client when ``redis.url`` is set (tag cache and fill locks share it);
3. the blob cache (``cache.dir``, ``cache.size``) unless ``cache`` is given;
4. the fill manager, unless ``fills`` is given; closing it drains running fills;
5. the tag cache and the manifest type index.

Routes: ``/v2/`` (200, no upstream ping), manifests and blobs GET/HEAD, tags list and
referrers passed through, ``/v2/_catalog`` 404 (a mirror has no catalog of its own, and most
upstreams -- Docker Hub among them -- do not serve one), every other method under ``/v2/``
405 UNSUPPORTED ("read-only pull-through mirror"), ``/metrics`` and ``/healthz``.
Every answer to a request with ``?ns=`` carries ``OCI-Namespace``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from edge.metrics import EdgeMetrics
from edge.routing import NS_HEADER, Router
from edge.upstreams import Upstreams
from regcore import errors
from regcore.config import EdgeConfig
from regcore.http import DIGEST, NAME, REFERENCE, on_prepare_api_header, standard_middlewares
from regcore.metrics import METRICS_REGISTRY, HttpMetrics, metrics_handler

if TYPE_CHECKING:
    from regcore.client import RegistryClient

Clock = Callable[[], float]


@dataclass
class Edge:
    """Everything the handlers need. Components are set by ``cleanup_ctx`` before serving."""

    config: EdgeConfig
    router: Router
    metrics: EdgeMetrics
    clock: Clock
    upstreams: Upstreams | None = None
    cache: object | None = None
    fills: object | None = None
    tags: object | None = None
    manifests: object | None = None
    access: object | None = None
    redis: object | None = None
    extras: dict[str, object] = field(default_factory=dict)

    def require_upstreams(self) -> Upstreams:
        if self.upstreams is None:
            raise errors.Unavailable(message="edge is starting or stopping")
        return self.upstreams


EDGE: web.AppKey[Edge] = web.AppKey("edge", Edge)


def create_app(
    config: EdgeConfig,
    *,
    cache: object | None = None,
    fills: object | None = None,
    clients: Mapping[str, RegistryClient] | None = None,
    clock: Clock = time.monotonic,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """Build the edge application for ``config`` (see the module docstring)."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = EdgeMetrics(registry)
    http_metrics = HttpMetrics(registry, "quayside_edge")
    edge = Edge(config=config, router=Router.from_config(config), metrics=metrics, clock=clock)
    app = web.Application(
        middlewares=[*standard_middlewares(), http_metrics.middleware()],
        client_max_size=64 * 1024,
    )
    app[EDGE] = edge
    app[METRICS_REGISTRY] = registry
    app.on_response_prepare.append(on_prepare_api_header)
    app.on_response_prepare.append(_echo_namespace)
    app.cleanup_ctx.append(_upstreams_ctx(edge, clients))
    _add_routes(app, registry)
    return app


def _upstreams_ctx(
    edge: Edge, clients: Mapping[str, RegistryClient] | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        from edge.upstreams import open_session

        session = open_session([edge.metrics.trace_config(edge.config.upstreams)])
        try:
            edge.upstreams = Upstreams(edge.config.upstreams, session, clients=clients)
            yield
        finally:
            if edge.upstreams is not None:
                await edge.upstreams.close()
            edge.upstreams = None
            await session.close()

    return ctx


async def _echo_namespace(request: web.Request, response: web.StreamResponse) -> None:
    ns = request.query.get("ns")
    if ns and request.path.startswith("/v2/"):
        response.headers.setdefault(NS_HEADER, ns)


def _add_routes(app: web.Application, registry: CollectorRegistry) -> None:
    from edge import blobs, manifests

    r = app.router
    r.add_get("/v2/", api_version, name="base")
    r.add_get("/v2", api_version, allow_head=True)
    r.add_get("/v2/_catalog", catalog, name="catalog")
    r.add_get(f"/v2/{NAME}/manifests/{REFERENCE}", manifests.get_manifest, name="manifest")
    r.add_get(f"/v2/{NAME}/blobs/{DIGEST}", blobs.get_blob, name="blob")
    r.add_get(f"/v2/{NAME}/tags/list", manifests.tags_list, name="tags")
    r.add_get(f"/v2/{NAME}/referrers/{DIGEST}", manifests.referrers, name="referrers")
    r.add_route("*", "/v2/{tail:.*}", refuse, name="refuse")
    r.add_get("/metrics", metrics_handler(registry), name="metrics")
    r.add_get("/healthz", healthz, name="healthz")


async def api_version(request: web.Request) -> web.Response:
    """``/v2/``: 200 with ``Docker-Distribution-API-Version``; pulls need no credentials here
    (private upstreams challenge on the resources themselves)."""
    return web.json_response({})


async def catalog(request: web.Request) -> web.Response:
    raise errors.NameUnknown(
        message="this pull-through mirror has no catalog; list repositories at the upstream"
    )


async def refuse(request: web.Request) -> web.Response:
    """Anything under ``/v2/`` that is not a pull: pushes and deletes are refused (405)."""
    if request.method in ("GET", "HEAD"):
        raise errors.NameUnknown(message="not found")
    raise errors.Unsupported(
        {"method": request.method},
        message="this is a read-only pull-through mirror; push to the origin registry",
        headers={"Allow": "GET, HEAD"},
    )


async def healthz(request: web.Request) -> web.Response:
    """200 when the edge is serving (upstreams are not pinged: a mirror serves its cache
    through upstream outages); the body names the components that are up."""
    edge = request.app[EDGE]
    body = {
        "status": "ok" if edge.upstreams is not None else "starting",
        "upstreams": [u.name for u in edge.config.upstreams],
        "redis": edge.redis is not None,
    }
    return web.json_response(body, status=200 if edge.upstreams is not None else 503)
