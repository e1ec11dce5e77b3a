"""The edge's aiohttp application: wiring only (handlers live in blobs and manifests).

``create_app(config, *, cache=None, fills=None, clients=None, clock=time.monotonic,
registry=None)`` builds the app. The blob cache (``cache.dir``, ``cache.size``), the region
lock (``redis.url``) and the fill manager are constructed here (the peer endpoint needs them
at routing time) unless given; given ones are opened and closed by the caller. Resources are
opened in ``cleanup_ctx`` in this order and closed in reverse:

1. the upstream session and one client per upstream (:mod:`edge.upstreams`) -- ``clients``
   (upstream name -> RegistryClient) replaces configured ones -- and the private-upstream
   access checker;
2. the blob cache (open: crash recovery, index rebuild) and the fill manager; at shutdown
   running fills are drained (finish and commit, up to the manager's drain timeout), then
   the region lock and the cache are closed;
3. the tag cache (memory, or Redis shared by the region), the manifest type index and the
   manifest service.

Routes: ``/v2/`` (200, no upstream ping), manifests and blobs GET/HEAD, tags list and
referrers passed through, ``/v2/_catalog`` 404 (a mirror has no catalog of its own, and most
upstreams -- Docker Hub among them -- do not serve one), every other method under ``/v2/``
405 UNSUPPORTED ("read-only pull-through mirror"), the peer endpoints of
:mod:`edge.peers`, ``/metrics`` and ``/healthz``. Every answer to a request with ``?ns=``
carries ``OCI-Namespace``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry

from edge import peers
from edge.cache import BlobCache
from edge.fill import EdgeFillMetrics, FillManager
from edge.metrics import EdgeMetrics
from edge.peers import PeerSource
from edge.regionlock import RegionLock
from edge.routing import NS_HEADER, Route, Router, valid_ns
from edge.tagcache import TagCache
from edge.upstreams import AccessChecker, Upstreams, is_private, open_session
from regcore import errors
from regcore.config import EdgeConfig
from regcore.http import DIGEST, NAME, REFERENCE, on_prepare_api_header, standard_middlewares
from regcore.metrics import METRICS_REGISTRY, HttpMetrics, metrics_handler

if TYPE_CHECKING:
    from edge.manifests import ManifestService
    from regcore.client import RegistryClient

log = logging.getLogger("quayside.edge")
Clock = Callable[[], float]
_T = TypeVar("_T")
PRIVATE_CHECK_TTL = 30.0
PEER_TOKEN_KEY = "quayside:peer-token"


@dataclass
class Edge:
    """Everything the handlers need. Components are set by ``cleanup_ctx`` before serving."""

    config: EdgeConfig
    router: Router
    metrics: EdgeMetrics
    fill_metrics: EdgeFillMetrics
    clock: Clock
    upstreams: Upstreams | None = None
    access: AccessChecker | None = None
    cache: BlobCache | None = None
    fills: FillManager | None = None
    tags: TagCache | None = None
    manifests: ManifestService | None = None
    redis: Any = None
    region: Any = None
    peer_token: str | None = None

    @staticmethod
    def require(component: _T | None) -> _T:
        """``component``, or 503 UNAVAILABLE while the edge is starting or stopping."""
        if component is None:
            raise errors.Unavailable(message="edge is starting or stopping")
        return component

    async def client_for(self, request: web.Request, route: Route, kind: str, ref: str) -> Any:
        """The registry client to fetch ``route``'s content with. For a private upstream the
        caller's credentials are checked against the upstream first (see
        :class:`edge.upstreams.AccessChecker`); raises what that check raises."""
        upstreams = self.require(self.upstreams)
        if is_private(route.upstream):
            access = self.require(self.access)
            return await access.check(
                route.upstream, request.headers.get("Authorization"), route.name, kind, ref
            )
        return upstreams.client(route.upstream.name)


EDGE: web.AppKey[Edge] = web.AppKey("edge", Edge)


def create_app(
    config: EdgeConfig,
    *,
    cache: BlobCache | None = None,
    fills: FillManager | None = None,
    clients: Mapping[str, RegistryClient] | None = None,
    clock: Clock = time.monotonic,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """Build the edge application for ``config`` (see the module docstring)."""
    registry = registry if registry is not None else CollectorRegistry()
    edge = Edge(
        config=config,
        router=Router.from_config(config),
        metrics=EdgeMetrics(registry),
        fill_metrics=EdgeFillMetrics(registry),
        clock=clock,
    )
    own_cache = cache is None
    if cache is None:
        cache = BlobCache(Path(config.cache.dir), config.cache.size)
    region = None
    if config.redis.url is not None and fills is None:
        region = RegionLock(config.redis.url, ttl=config.redis.lock_ttl)
    own_fills = fills is None
    if fills is None:
        fills = FillManager(
            cache,
            region=region,
            advertise_url=config.advertise,
            peer_source=lambda owner, digest: PeerSource(
                owner, digest, edge.require(edge.upstreams).session, token=edge.peer_token
            ),
            metrics=edge.fill_metrics,
        )
    edge.region = region
    edge.redis = region.redis if region is not None else None
    http_metrics = HttpMetrics(registry, "quayside_edge")
    app = web.Application(
        middlewares=[*standard_middlewares(), http_metrics.middleware(), _upstream_errors],
        client_max_size=64 * 1024,
    )
    app[EDGE] = edge
    app[METRICS_REGISTRY] = registry
    app.on_response_prepare.append(on_prepare_api_header)
    app.on_response_prepare.append(_echo_namespace)
    app.on_response_prepare.append(_digest_etag)
    app.cleanup_ctx.append(_upstreams_ctx(edge, clients))
    app.cleanup_ctx.append(_blobs_ctx(edge, cache, fills, own_cache=own_cache, own_fills=own_fills))
    app.cleanup_ctx.append(_manifests_ctx(edge))
    _add_routes(app, registry)
    # The peer endpoint hands out cached bytes without upstream checks: only nodes of the
    # region, which share a token, may use it; a node without a region refuses everyone.
    peers.add_routes(app, fills, cache, token=lambda: edge.peer_token)
    return app


# -- resources ------------------------------------------------------------------------------
Ctx = Callable[[web.Application], AsyncIterator[None]]


def _upstreams_ctx(edge: Edge, clients: Mapping[str, RegistryClient] | None) -> Ctx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        session = open_session([edge.metrics.trace_config(edge.config.upstreams)])
        try:
            edge.upstreams = Upstreams(edge.config.upstreams, session, clients=clients)
            edge.access = AccessChecker(
                edge.upstreams,
                clock=edge.clock,
                ttl=PRIVATE_CHECK_TTL,
                on_result=lambda r: edge.metrics.auth_checks.labels(r).inc(),
            )
            yield
        finally:
            upstreams, edge.access, edge.upstreams = edge.upstreams, None, None
            if upstreams is not None:
                await upstreams.close()
            await session.close()

    return ctx


def _blobs_ctx(
    edge: Edge, cache: BlobCache, fills: FillManager, *, own_cache: bool, own_fills: bool
) -> Ctx:
    """Open the cache, start the fills; at shutdown drain fills, then close cache and lock."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if own_cache:
            await cache.open()
        try:
            if edge.region is not None:
                edge.peer_token = await _region_peer_token(edge)
            if own_fills:
                await fills.start()
            edge.cache, edge.fills = cache, fills
            try:
                yield
            finally:
                edge.fills = None
                if own_fills:
                    await fills.close()
                if edge.region is not None:
                    with contextlib.suppress(Exception):
                        await edge.region.close()
        finally:
            edge.cache = None
            if own_cache:
                await cache.close()

    return ctx


@web.middleware
async def _upstream_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Relay upstream errors with their code and status but without upstream URLs in ``detail``.

    A 401 always carries a challenge (RFC 9110 15.5.2): clients then try their next host.
    """
    try:
        return await handler(request)
    except errors.RegistryError as err:
        if getattr(err, "from_upstream", False):
            err.detail = "upstream answered " + str(err.status)
        if err.status == 401:
            err.headers.setdefault("WWW-Authenticate", 'Basic realm="quayside-edge"')
        raise


async def _region_peer_token(edge: Edge) -> str | None:
    """The region's shared peer token: configured, or agreed through Redis (first node wins).

    Redis unreachable at start-up: ``None`` (peer streaming off; fills stay node-local).
    """
    if edge.config.redis.peer_token:
        return edge.config.redis.peer_token
    try:
        await edge.region.redis.set(PEER_TOKEN_KEY, secrets.token_hex(32), nx=True)
        value = await edge.region.redis.get(PEER_TOKEN_KEY)
    except Exception as exc:
        log.warning(
            "region peer token unavailable; peer streaming disabled",
            extra={"error": type(exc).__name__},
        )
        return None
    return value.decode() if isinstance(value, bytes) else value


def _manifests_ctx(edge: Edge) -> Ctx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        from edge.manifests import ManifestService, ManifestTypes

        cfg = edge.config
        on_error = lambda op: edge.metrics.tag_cache.labels("shared_error").inc()  # noqa: E731
        if cfg.redis.url is not None:
            tags = TagCache.redis(
                cfg.redis.url, ttl=cfg.tags.ttl, clock=edge.clock, on_error=on_error
            )
        else:
            tags = TagCache(ttl=cfg.tags.ttl, clock=edge.clock)
        cache = edge.require(edge.cache)
        types = ManifestTypes(Path(cache.directory) / "manifest-types")
        await types.open()
        edge.tags = tags
        edge.manifests = ManifestService(
            cache=cache,
            types=types,
            tags=tags,
            metrics=edge.metrics,
            revalidate_timeout=cfg.tags.revalidate_timeout,
            max_bytes=cfg.limits.max_manifest_bytes,
        )
        try:
            yield
        finally:
            service, edge.manifests, edge.tags = edge.manifests, None, None
            await service.close()
            await types.close()
            await tags.close()

    return ctx


# -- routes ---------------------------------------------------------------------------------
async def _digest_etag(request: web.Request, response: web.StreamResponse) -> None:
    """The ETag of content is its digest (FileResponse would set an mtime-size one)."""
    digest = response.headers.get("Docker-Content-Digest")
    if digest is not None and response.status in (200, 206):
        response.headers["ETag"] = f'"{digest}"'


async def _echo_namespace(request: web.Request, response: web.StreamResponse) -> None:
    ns = request.query.get("ns")
    if ns and valid_ns(ns) and request.path.startswith("/v2/"):  # never a control character
        response.headers.setdefault(NS_HEADER, ns)


def _add_routes(app: web.Application, registry: CollectorRegistry) -> None:
    from edge import blobs, manifests

    r = app.router
    r.add_get("/v2/", api_version, name="base")
    r.add_get("/v2", api_version)
    r.add_get("/v2/_catalog", catalog, name="catalog")
    r.add_get(f"/v2/{NAME}/manifests/{REFERENCE}", manifests.get_manifest, name="manifest")
    r.add_get(f"/v2/{NAME}/blobs/{DIGEST}", blobs.get_blob, name="blob")
    r.add_get(f"/v2/{NAME}/tags/list", manifests.tags_list, name="tags")
    r.add_get(f"/v2/{NAME}/referrers/{DIGEST}", manifests.referrers, name="referrers")
    r.add_route("*", "/v2/{tail:.*}", refuse, name="refuse")
    r.add_get("/metrics", metrics_handler(registry), name="metrics")
    r.add_get("/healthz", healthz, name="healthz")


async def api_version(request: web.Request) -> web.Response:
    """``/v2/``: 200 with ``Docker-Distribution-API-Version``; the upstream is not pinged.

    When the default upstream is private, a request without ``Authorization`` gets 401 with
    a Basic challenge, so clients that learn the auth scheme from this ping (dockerd) send
    their credentials on the requests that follow (those are checked against the upstream).
    """
    edge = request.app[EDGE]
    default = edge.router.default
    if is_private(default) and not request.headers.get("Authorization"):
        raise errors.Unauthorized(
            {"upstream": default.name},
            message="this mirror's default upstream is private: credentials required",
            headers={"WWW-Authenticate": f'Basic realm="quayside edge ({default.name})"'},
        )
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
    """200 once serving (upstreams are not pinged: a mirror serves its cache through upstream
    outages), 503 while starting or stopping; the body says which parts are up."""
    edge = request.app[EDGE]
    ready = edge.upstreams is not None and edge.fills is not None and edge.manifests is not None
    body = {
        "status": "ok" if ready else "unavailable",
        "upstreams": [u.name for u in edge.config.upstreams],
        "redis": edge.redis is not None,
        "cache_bytes": edge.cache.bytes_used if edge.cache is not None else None,
    }
    return web.json_response(body, status=200 if ready else 503)
