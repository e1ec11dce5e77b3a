"""Manifest handlers of the edge: GET/HEAD ``/v2/<name>/manifests/<ref>``, tags list, referrers.

- Manifests: the route is chosen (:class:`edge.routing.Router`), the caller's access
  checked (:class:`edge.auth.EdgeAccess`), then the
  :class:`edge.manifestservice.ManifestService` answers by tag or by digest, negotiated for the
  client's ``Accept`` as registry:2 does (an OCI manifest or index the client did not list:
  404 MANIFEST_UNKNOWN; a Docker list by tag to a client taking no lists: its linux/amd64
  child, with that child's digest). Answers carry
  ``Docker-Content-Digest``, ``ETag`` (the digest), ``Content-Type`` and, for HEAD,
  ``Content-Length``.
- A manifest about to be served is judged by the signature / scan policies when configured
  (:class:`edge.policy.EdgePolicy`; 403 DENIED naming the policy).
- Referrers are answered from the :class:`edge.referrers.ReferrersService` (cached like tags).
- The tags list is passed through to the upstream (nothing cached): status 200 answers are
  relayed with their body, ``Content-Type`` and a ``Link`` rewritten to this edge's path
  (``?ns=`` kept); other answers become the mapped OCI error.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from aiohttp import web

from edge.routing import Route, Router, ns_of
from edge.timeouts import deadline
from regcore import errors
from regcore.client.status import Kind, error_for
from regcore.digest import Digest
from regcore.reference import Tag, parse_reference

if TYPE_CHECKING:
    from edge.auth import EdgeAccess
    from edge.manifestservice import ManifestService
    from edge.metrics import EdgeMetrics
    from edge.negotiation import Negotiation
    from edge.policy import EdgePolicy
    from edge.referrers import ReferrersService
    from edge.upstreamclient import UpstreamClient


# -- handlers --------------------------------------------------------------------------------
class ManifestHandlers:
    """GET/HEAD manifests, GET tags list and referrers (see the module docstring)."""

    def __init__(
        self,
        *,
        router: Router,
        access: EdgeAccess,
        manifests: ManifestService,
        negotiation: Negotiation,
        metrics: EdgeMetrics,
        policy: EdgePolicy | None = None,
        referrers_cache: ReferrersService | None = None,
    ) -> None:
        self.router = router
        self.access = access
        self.manifests = manifests
        self.negotiation = negotiation
        self.policy = policy
        self.referrers_cache = referrers_cache
        self._bytes_from_cache = metrics.bytes_served.labels("cache")

    async def _client(
        self, request: web.Request, route: Route, kind: str, ref: str
    ) -> UpstreamClient:
        return await self.access.client_for(request, route, kind, ref)

    async def get_manifest(self, request: web.Request) -> web.StreamResponse:
        """GET/HEAD ``/v2/<name>/manifests/<reference>``."""
        route = self.router.route(request.match_info["name"], ns_of(request.query))
        try:
            ref = parse_reference(request.match_info["reference"])
        except errors.TagInvalid as exc:
            raise errors.ManifestUnknown(exc.detail, message="invalid tag") from None
        need_body = request.method != "HEAD"
        accepted = self.negotiation.parse_accept(request.headers.getall("Accept", []))
        # The caller's access (private upstreams) is checked here, before anything is served.
        client = await self._client(request, route, "manifest", str(ref))
        service = self.manifests
        if isinstance(ref, Tag):
            served = await service.by_tag(
                route, ref.name, accepted, need_body=need_body, client=client
            )
        else:
            served = await service.by_digest(
                route, ref, accepted, need_body=need_body, client=client
            )
        if self.policy is not None:  # signature / scan policies (edge/policy.py)
            await self.policy.check(route, served, client)
        headers = {
            "Docker-Content-Digest": served.digest,
            "ETag": f'"{served.digest}"',
            "Content-Type": served.media_type,
            **route.headers,
        }
        if not need_body:
            headers["Content-Length"] = str(served.size)
            return web.Response(status=200, headers=headers)
        assert served.body is not None
        self._bytes_from_cache.inc(len(served.body))
        return web.Response(status=200, body=served.body, headers=headers)

    async def tags_list(self, request: web.Request) -> web.StreamResponse:
        """GET ``/v2/<name>/tags/list`` passed through to the upstream (``n``/``last`` kept)."""
        route = self.router.route(request.match_info["name"], ns_of(request.query))
        client = await self._client(request, route, "tags", "list")
        query = {k: v for k, v in request.query.items() if k in ("n", "last")}
        path = f"/v2/{route.name}/tags/list"
        return await _passthrough(request, route, client, path, query, "tags")

    async def referrers(self, request: web.Request) -> web.StreamResponse:
        """GET ``/v2/<name>/referrers/<digest>``: from the referrers cache (edge/referrers.py),
        else passed through (``artifactType`` kept)."""
        route = self.router.route(request.match_info["name"], ns_of(request.query))
        digest = Digest.parse(request.match_info["digest"])
        client = await self._client(request, route, "manifest", str(digest))
        if self.referrers_cache is not None:
            wanted = request.query.get("artifactType") or None
            body, headers = await self.referrers_cache.answer(route, str(digest), wanted, client)
            return web.Response(status=200, body=body, headers={**headers, **route.headers})
        query = {k: v for k, v in request.query.items() if k == "artifactType"}
        path = f"/v2/{route.name}/referrers/{digest}"
        return await _passthrough(request, route, client, path, query, "referrers")


async def _passthrough(
    request: web.Request,
    route: Route,
    client: UpstreamClient,
    path: str,
    query: dict[str, str],
    kind: Kind,
) -> web.Response:
    """GET ``path`` upstream and relay status 200 answers (body, Content-Type, a ``Link``
    rewritten to this edge's path); other answers become the mapped OCI error."""
    try:
        async with asyncio.timeout(deadline(route.upstream)):
            resp = await client.request("GET", path, params=query or None)
            async with resp:
                if resp.status == 200:
                    body = await resp.read()
                else:  # a refusal's envelope names its OCI code, relayed (bounded read)
                    body = await resp.content.read(64 * 1024)
                status, headers, url = resp.status, resp.headers.copy(), resp.url
    except TimeoutError:
        raise errors.UpstreamTimeout({"path": path}) from None
    if status != 200:
        raise error_for(status, kind, method="GET", url=url, headers=headers, body=body)
    out = {"Content-Type": headers.get("Content-Type", "application/json"), **route.headers}
    link = headers.get("Link")
    if link and "?" in link:
        params = link.split("?", 1)[1].split(">", 1)[0]
        if route.ns is not None:
            params += "&" + urlencode({"ns": route.ns})
        out["Link"] = f'<{request.path}?{params}>; rel="next"'
    return web.Response(status=200, body=body, headers=out)
