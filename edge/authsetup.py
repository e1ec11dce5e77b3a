"""Builds the edge's :class:`edge.auth.EdgeAccess` from its configuration (no I/O).

- one :class:`edge.authtokens.UpstreamTokens` per upstream with ``auth.mode: token`` (keys
  fetched from its JWKS URL through the shared upstream session, on first need);
- the edge's own users (``auth.htpasswd``): :class:`edge.authusers.EdgeUsers` over a live
  :class:`regcore.auth.htpasswd.Htpasswd` (re-read when the file changes) and a
  :class:`regcore.auth.ratelimit.LoginLimiter` (5 failures per user and address, 20 per
  address, in 5 minutes);
- the :class:`edge.upstreams.AccessChecker` of private upstreams, given.

Token verification (PyJWT, cryptography) and the users file (bcrypt) are imported here only
when the configuration asks for them: an edge without token-mode upstreams or edge users
never loads those libraries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.auth import EdgeAccess

if TYPE_CHECKING:
    from edge.authtokens import UpstreamTokens
    from edge.authusers import EdgeUsers
    from edge.config import EdgeConfig
    from edge.routing import Router
    from edge.upstreams import AccessChecker, Upstreams

__all__ = ["build_access"]


def build_access(
    config: EdgeConfig, router: Router, upstreams: Upstreams, checker: AccessChecker
) -> EdgeAccess:
    """The edge's authorization point for ``config`` (see the module docstring)."""
    tokens: dict[str, UpstreamTokens] = {}
    for u in config.upstreams:
        if u.auth is not None and u.auth.mode == "token":
            from edge.authtokens import UpstreamTokens

            tokens[u.name] = UpstreamTokens(
                u, lambda: upstreams.session, min_interval=u.auth.jwks_min_interval
            )
    users: EdgeUsers | None = None
    if config.auth.htpasswd_path is not None:
        from edge.authusers import EdgeUsers
        from regcore.auth.htpasswd import Htpasswd
        from regcore.auth.ratelimit import LoginLimiter

        users = EdgeUsers(Htpasswd(config.auth.htpasswd_path), config.auth.realm, LoginLimiter())
    return EdgeAccess(
        router=router, upstreams=upstreams, checker=checker, tokens=tokens, users=users
    )
