"""The edge's one authorization point: :class:`EdgeAccess`.

Every handler that serves repository content (manifests, blobs, tags list, referrers) asks
:meth:`EdgeAccess.client_for` before anything -- cached or not -- is served, and ``/v2/``
asks :meth:`EdgeAccess.check_base`. What decides depends on the upstream the request routes
to, in this order:

1. **Token mode** (upstream ``auth.mode: token``, e.g. a Quayside origin with its token
   service): the caller must present a Bearer token *of that upstream*, verified offline
   (:class:`edge.authtokens.UpstreamTokens`: the upstream's JWKS, issuer, audience, expiry),
   whose ``access`` grants ``pull`` on the repository of the request as the upstream names
   it. No token: 401 with the challenge the upstream itself gives (``Bearer realm=<its token
   service>,service=...,scope="repository:NAME:pull"``), so ``docker login``, skopeo and
   kubelet pull secrets work through the edge; a bad or foreign token: the same with
   ``error="invalid_token"``; a token for another repository: ``error="insufficient_scope"``.
   Content comes from the upstream with the edge's configured credentials, else with the
   caller's own token -- the only case where a client's token leaves the edge, and only to
   the upstream that issued it (the token verified against that upstream's keys).
   A blob or a manifest by digest is content-addressed and cached once for all repositories,
   so before one is served for a repository the upstream must have answered for *that*
   repository: an upstream ``HEAD`` in that repository, remembered (bounded, LRU) per
   (upstream, repository, digest). A token for repository B never opens a blob cached from
   repository A unless the upstream says B holds it too.
2. **Private** upstreams (``private: true``, third-party registries): the
   :class:`edge.upstreams.AccessChecker` (the caller's own credentials are checked upstream).
3. **Public** upstreams: open, unless the edge has its own users (``auth.htpasswd``): then
   HTTP Basic with a bcrypt htpasswd user (:class:`edge.authusers.EdgeUsers`), failed sign-ins throttled per
   client address (429 ``TOOMANYREQUESTS`` with ``Retry-After``). Those credentials are the
   edge's own and never go upstream.

Refusals raise regcore.errors (401 UNAUTHORIZED with ``WWW-Authenticate``, 429, 503 when the
upstream's keys cannot be fetched yet) before any content is looked at; nothing is logged
with a password or token in it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from edge.timeouts import bounded, deadline
from edge.upstreams import AccessChecker, Upstreams, is_private
from regcore import errors
from regcore.auth.scopes import Access, allows
from regcore.digest import is_digest

if TYPE_CHECKING:
    from edge.authtokens import UpstreamTokens
    from edge.authusers import EdgeUsers
    from edge.routing import Route, Router
    from edge.upstreamclient import UpstreamClient

__all__ = ["LINKS_REMEMBERED", "EdgeAccess"]

log = logging.getLogger("quayside.edge.auth")
LINKS_REMEMBERED = 100_000
_LINKED_ROUTES = ("blob", "manifest")


class EdgeAccess:
    """See the module docstring. ``tokens``: upstream name -> its token verification, for
    the upstreams in token mode; ``users``: the edge's own users, or None."""

    def __init__(
        self,
        *,
        router: Router,
        upstreams: Upstreams,
        checker: AccessChecker,
        tokens: Mapping[str, UpstreamTokens],
        users: EdgeUsers | None = None,
        links_remembered: int = LINKS_REMEMBERED,
    ) -> None:
        self.router = router
        self.upstreams = upstreams
        self.checker = checker
        self.tokens = dict(tokens)
        self.users = users
        self.links_remembered = links_remembered
        self._links: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    async def client_for(
        self, request: web.Request, route: Route, kind: str, ref: str
    ) -> UpstreamClient:
        """The upstream client to serve ``route.name``'s ``kind`` ``ref`` with, once the
        caller may have it (see the module docstring). Raises Unauthorized, Denied,
        TooManyRequests, BlobUnknown/ManifestUnknown (the upstream says the repository has
        no such object), UpstreamUnavailable/UpstreamTimeout, Unavailable."""
        upstream = route.upstream
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        gate = self.tokens.get(upstream.name)
        if gate is not None:
            client = await self._token_client(gate, authorization, route)
            resource = request.match_info.route.resource
            if resource is not None and resource.name in _LINKED_ROUTES and is_digest(ref):
                await self._require_link(client, route, kind, ref)
            return client
        if is_private(upstream):
            return await self.checker.check(upstream, authorization, route.name, kind, ref)
        if self.users is not None:
            await self.users.authenticate(request)
        return self.upstreams.client(upstream.name)

    async def check_base(self, request: web.Request) -> None:
        """``/v2/``: what the default upstream's mode asks of a caller signing in (a valid
        token of a token-mode upstream, credentials for a private one, an edge user). Raises
        Unauthorized with the challenge, TooManyRequests, Unavailable."""
        default = self.router.default
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        gate = self.tokens.get(default.name)
        if gate is not None:
            if not authorization:
                raise await gate.unauthorized()
            _, claims = await self._verified(gate, authorization, ())
            if not claims.get("sub"):  # an anonymous token is no sign-in (as at the origin)
                raise await gate.unauthorized()
        elif is_private(default):
            if not authorization:
                raise errors.Unauthorized(
                    {"upstream": default.name},
                    message="this mirror's default upstream is private: credentials required",
                    headers={"WWW-Authenticate": f'Basic realm="quayside edge ({default.name})"'},
                )
        elif self.users is not None:
            await self.users.authenticate(request)

    async def _verified(
        self, gate: UpstreamTokens, authorization: str, scopes: tuple[Access, ...]
    ) -> tuple[str, dict[str, object]]:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise await gate.unauthorized(scopes, "invalid_token", "a Bearer token is required")
        try:
            return token, await gate.verify(token)
        except errors.Unauthorized as exc:
            log.info("token refused", extra={"upstream": gate.upstream.name, "reason": exc.msg})
            raise await gate.unauthorized(scopes, "invalid_token", exc.msg) from None

    async def _token_client(
        self, gate: UpstreamTokens, authorization: str | None, route: Route
    ) -> UpstreamClient:
        scopes = (Access("repository", route.name, ("pull",)),)
        if not authorization:
            raise await gate.unauthorized(scopes)
        token, claims = await self._verified(gate, authorization, scopes)
        if not allows(claims, "repository", route.name, "pull"):
            raise await gate.unauthorized(
                scopes, "insufficient_scope", "the token does not grant pull on this repository"
            )
        upstream = route.upstream
        if self.upstreams.has_credentials(upstream.name):
            return self.upstreams.client(upstream.name)
        # The token was issued by this very upstream (verified with its keys): it may go back.
        return self.upstreams.for_credentials(upstream, f"Bearer {token}")

    async def _require_link(
        self, client: UpstreamClient, route: Route, kind: str, ref: str
    ) -> None:
        """Raise unless the upstream answered that ``route.name`` holds ``ref`` (asked once,
        then remembered). Raises BlobUnknown/ManifestUnknown, Unauthorized, UpstreamTimeout,
        UpstreamUnavailable."""
        key = (route.upstream.name, route.name, ref)
        if key in self._links:
            self._links.move_to_end(key)
            return
        if kind == "blob":
            await bounded(client.head_blob(route.name, ref), deadline(route.upstream))
        else:
            await bounded(client.head_manifest(route.name, ref), deadline(route.upstream))
        self._links[key] = None
        while len(self._links) > self.links_remembered:
            self._links.popitem(last=False)

    def close(self) -> None:
        for gate in self.tokens.values():
            gate.close()
