"""The origin's access-control parts, built once from config: :class:`AccessControl`.

``build_access_control(config)`` assembles, from :class:`regcore.auth.config.AuthConfig`:
the users (:class:`~regcore.auth.htpasswd.Htpasswd`, when a users file is configured), the
robots (:class:`~regcore.auth.robots.RobotStore`), the login limiter, the token service's
issuer (signing key created under the root on first start) and the verifier of ``auth.token``
(trusting ``rootcertbundle`` plus, with the token service on, the origin's own certificate),
the :class:`~regcore.auth.authenticator.Authenticator`, the
:class:`~regcore.auth.authorizer.Authorizer` and the :class:`~origin.audit.AuditLog`.
bcrypt (users file) and PyJWT/cryptography (token service, ``auth.token``) are imported only
when the configuration has them.

:func:`warn_if_open` logs a loud warning when the origin listens beyond loopback with no
authentication (anyone who can reach it may push, overwrite tags and delete).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from origin.audit import AuditLog
from regcore.auth.authenticator import Authenticator
from regcore.auth.authorizer import Authorizer
from regcore.auth.config import AuthConfig
from regcore.auth.principal import Network, client_address, in_networks
from regcore.auth.ratelimit import LoginLimiter
from regcore.auth.robots import RobotStore

if TYPE_CHECKING:
    from regcore.auth.htpasswd import Htpasswd
    from regcore.auth.tokens import TokenIssuer, TokenVerifier

__all__ = ["ACCESS", "AccessControl", "build_access_control", "warn_if_open"]

log = logging.getLogger("quayside.origin")
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass
class AccessControl:
    """Everything the access middleware and the token service use (one per app)."""

    config: AuthConfig
    authenticator: Authenticator
    authorizer: Authorizer
    audit: AuditLog
    users: Htpasswd | None
    robots: RobotStore
    issuer: TokenIssuer | None
    trusted: tuple[Network, ...]

    def client_address(self, request: web.BaseRequest) -> str:
        """The peer, or what a trusted proxy says in ``X-Forwarded-For``."""
        return client_address(
            request.remote, request.headers.getall("X-Forwarded-For", []), self.trusted
        )

    def request_id(self, request: web.BaseRequest) -> str:
        """A trusted proxy's ``X-Request-Id`` (if well-formed), else a fresh id."""
        given = request.headers.get("X-Request-Id")
        if (
            given
            and self.trusted
            and in_networks(request.remote or "", self.trusted)
            and _REQUEST_ID_RE.fullmatch(given)
        ):
            return given
        return uuid.uuid4().hex

    def close(self) -> None:
        self.audit.close()


def build_access_control(config: AuthConfig) -> AccessControl:
    """Assemble the parts (see the module docstring). Raises ValueError/OSError for an
    unusable signing key or trust bundle."""
    users_path = config.users_path
    users: Htpasswd | None = None
    if users_path:
        from regcore.auth.htpasswd import Htpasswd

        users = Htpasswd(users_path)
    robots = RobotStore(config.robots_path)
    limiter = LoginLimiter(
        per_user=config.limits.failures_per_user,
        per_address=config.limits.failures_per_address,
        window=config.limits.window,
    )
    ts = config.tokenservice
    issuer: TokenIssuer | None = None
    if ts.enabled:
        from regcore.auth.signing import load_or_create

        issuer, created = load_or_create(
            ts.key, ts.certificate, issuer=ts.issuer, service=ts.service, algorithm=ts.algorithm
        )
        if created:
            log.info(
                "created the token signing key; registries trust it with auth.token.rootcertbundle",
                extra={"certificate": ts.certificate},
            )
    verifier: TokenVerifier | None = None
    realm = config.htpasswd.realm if config.htpasswd else "quayside"
    service = None
    if config.token is not None:
        from regcore.auth.tokens import TokenVerifier, load_certificates

        roots = []
        if config.token.rootcertbundle:
            with open(config.token.rootcertbundle, "rb") as fh:
                roots.extend(load_certificates(fh.read()))
        if issuer is not None:
            roots.extend(issuer.bundle())
        if not roots:
            raise ValueError("auth.token.rootcertbundle holds no certificate")
        kwargs: dict[str, Any] = {}
        if config.token.signingalgorithms:
            kwargs["algorithms"] = config.token.signingalgorithms
        verifier = TokenVerifier(roots, config.token.issuer, config.token.service, **kwargs)
        realm, service = config.token.realm, config.token.service
    authenticator = Authenticator(
        config.mode,
        realm=realm,
        service=service,
        htpasswd=users if config.mode == "htpasswd" or ts.enabled else None,
        robots=robots,
        verifier=verifier,
        limiter=limiter,
        own_tokens=ts.enabled,
    )
    authorizer = Authorizer(
        config.rules, robots=robots, allow=config.allow, open=config.mode == "none"
    )
    return AccessControl(
        config=config,
        authenticator=authenticator,
        authorizer=authorizer,
        audit=AuditLog(config.audit),
        users=users,
        robots=robots,
        issuer=issuer,
        trusted=config.trustedproxies,
    )


def warn_if_open(config: AuthConfig, host: str) -> bool:
    """Log a loud warning (and return True) when ``host`` is not loopback and authentication
    is off."""
    if config.mode != "none":
        return False
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return False
    log.warning(
        "NO AUTHENTICATION: the origin listens on %s and anyone who can reach it may push, "
        "overwrite tags and delete. Configure auth.htpasswd or auth.token "
        "(see README 'Secure it').",
        host or "all interfaces",
        extra={"event": "open_registry", "host": host},
    )
    return True


ACCESS: web.AppKey[AccessControl] = web.AppKey("origin_access", AccessControl)
