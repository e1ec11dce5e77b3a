"""The edge's aiohttp application: routes, middlewares and response hooks over an EdgeNode.

``create_app(config, *, cache=None, fills=None, clients=None, clock=time.monotonic,
registry=None)`` builds an :class:`edge.node.EdgeNode` (which constructs every part and owns
start and stop; the keyword arguments are its own) and the application around it: the node's
:meth:`~edge.node.EdgeNode.lifespan` is the app's ``cleanup_ctx``, so the node starts before
the first request is served and stops after the last. ``app[EDGE_NODE]`` is the node.

Routes: ``/v2/`` (200, no upstream ping), manifests and blobs GET/HEAD, tags list and
referrers passed through, ``/v2/_catalog`` 404 (a mirror has no catalog of its own, and most
upstreams -- Docker Hub among them -- do not serve one), every other method under ``/v2/``
405 UNSUPPORTED ("read-only pull-through mirror"; instead of a ``100 Continue`` when the
client sent ``Expect: 100-continue``), the peer endpoints of
:mod:`edge.peers`, ``/metrics`` and ``/healthz``. Every answer to a request with ``?ns=``
carries ``OCI-Namespace``; errors relayed from an upstream lose their detail (which names
upstream URLs) and a 401 always carries a challenge.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from edge import peers
from edge.cache import BlobCache
from edge.config import EdgeConfig
from edge.fill import FillManager
from edge.health import EdgeHealth
from edge.node import Clock, EdgeNode
from edge.routing import NS_HEADER, Router, valid_ns
from edge.ui import install as install_ui
from regcore import errors
from regcore.expectcontinue import continue_owed, defer_continue
from regcore.http import DIGEST, NAME, REFERENCE, on_prepare_api_header, standard_middlewares
from regcore.metrics import METRICS_REGISTRY, HttpMetrics, metrics_handler, process_metrics
from regcore.unreadbody import refuse_unread_body

if TYPE_CHECKING:
    from edge.upstreamclient import UpstreamClient

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
EDGE_NODE: web.AppKey[EdgeNode] = web.AppKey("edge_node", EdgeNode)

__all__ = ["EDGE_NODE", "create_app"]


def create_app(
    config: EdgeConfig,
    *,
    cache: BlobCache | None = None,
    fills: FillManager | None = None,
    clients: Mapping[str, UpstreamClient] | None = None,
    clock: Clock = time.monotonic,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """Build the edge application for ``config`` (see the module docstring)."""
    node = EdgeNode(
        config, cache=cache, fills=fills, clients=clients, clock=clock, registry=registry
    )
    http_metrics = HttpMetrics(node.registry, "quayside_edge")
    process_metrics(node.registry)
    app = web.Application(
        middlewares=[*standard_middlewares(), http_metrics.middleware(), _upstream_errors],
        client_max_size=64 * 1024,
    )
    app[EDGE_NODE] = node
    app[METRICS_REGISTRY] = node.registry
    app.on_response_prepare.append(on_prepare_api_header)
    app.on_response_prepare.append(_echo_namespace)
    app.on_response_prepare.append(_digest_etag)
    app.cleanup_ctx.append(node.lifespan)
    _add_routes(app, node)
    install_ui(app, node)  # read-only status page at /ui/ (edge/ui.py)
    # The peer endpoint hands out cached bytes without upstream checks: only nodes of the
    # region, which share a token, may use it; a node without a region refuses everyone.
    # With tls.clientcas, peers must also show a client certificate signed by those CAs.
    peers.add_routes(
        app,
        node.fills,
        node.cache,
        token=node.peer_token.current,
        require_client_cert=bool(config.tls.clientcas),
    )
    return app


def _add_routes(app: web.Application, node: EdgeNode) -> None:
    base = BaseHandlers(node)
    manifests = node.manifest_handlers
    r = app.router
    r.add_get("/v2/", base.api_version, name="base")
    r.add_get("/v2", base.api_version)
    r.add_get("/v2/_catalog", catalog, name="catalog")
    r.add_get(f"/v2/{NAME}/manifests/{REFERENCE}", manifests.get_manifest, name="manifest")
    r.add_get(f"/v2/{NAME}/blobs/{DIGEST}", node.blobs.get, name="blob")
    r.add_get(f"/v2/{NAME}/tags/list", manifests.tags_list, name="tags")
    r.add_get(f"/v2/{NAME}/referrers/{DIGEST}", manifests.referrers, name="referrers")
    # Writes are all refused: no 100 Continue for their bodies (see refuse).
    r.add_route("*", "/v2/{tail:.*}", refuse, name="refuse", expect_handler=defer_continue)
    if node.config.metrics_on_main_port:  # else off, or on metrics.listen (edge.__main__)
        r.add_get("/metrics", metrics_handler(node.registry), name="metrics")
    EdgeHealth(node.config, serving=lambda: node.serving, extra=node.health).add_routes(app)


# -- middleware and response hooks ----------------------------------------------------------
@web.middleware
async def _upstream_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Relay upstream errors with their code and status but without upstream URLs in ``detail``.

    A 401 always carries a challenge (RFC 9110 15.5.2): clients then try their next host.
    """
    try:
        return await handler(request)
    except errors.RegistryError as err:
        if err.from_upstream:
            err.detail = "upstream answered " + str(err.status)
        if err.status == 401:
            err.headers.setdefault("WWW-Authenticate", 'Basic realm="quayside-edge"')
        raise


async def _digest_etag(request: web.Request, response: web.StreamResponse) -> None:
    """The ETag of content is its digest (FileResponse would set an mtime-size one)."""
    digest = response.headers.get("Docker-Content-Digest")
    if digest is not None and response.status in (200, 206):
        response.headers["ETag"] = f'"{digest}"'


async def _echo_namespace(request: web.Request, response: web.StreamResponse) -> None:
    ns = request.query.get("ns")
    if ns and valid_ns(ns) and request.path.startswith("/v2/"):  # never a control character
        response.headers.setdefault(NS_HEADER, ns)


# -- the registry API's base, refusals, health ----------------------------------------------
class BaseHandlers:
    """``/v2/`` of one node (``/healthz`` and ``/readyz``: :mod:`edge.health`)."""

    def __init__(self, node: EdgeNode) -> None:
        self.router: Router = node.router
        self.node = node

    async def api_version(self, request: web.Request) -> web.Response:
        """``/v2/``: 200 with ``Docker-Distribution-API-Version``; the upstream is not pinged.

        The caller must first pass what the default upstream's mode asks
        (:meth:`edge.auth.EdgeAccess.check_base`): a token-mode upstream answers an anonymous
        caller with its own Bearer challenge, a private one with a Basic challenge when no
        ``Authorization`` came (dockerd learns the auth scheme from this ping), edge users
        with the edge's Basic challenge.
        """
        await self.node.access.check_base(request)
        return web.json_response({})


async def catalog(request: web.Request) -> web.Response:
    raise errors.NameUnknown(
        message="this pull-through mirror has no catalog; list repositories at the upstream"
    )


async def refuse(request: web.Request) -> web.StreamResponse:
    """Anything under ``/v2/`` that is not a pull: pushes and deletes are refused (405).

    A push sent with ``Expect: 100-continue`` gets the 405 instead of a 100, as its
    connection's last answer (:mod:`regcore.expectcontinue`): its body is never asked for."""
    if request.method in ("GET", "HEAD"):
        raise errors.NameUnknown(message="not found")
    err = errors.Unsupported(
        {"method": request.method},
        message="this is a read-only pull-through mirror; push to the origin registry",
        headers={"Allow": "GET, HEAD"},
    )
    if continue_owed(request):
        return await refuse_unread_body(request, err)
    raise err
