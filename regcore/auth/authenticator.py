"""Turn an ``Authorization`` header into a :class:`~regcore.auth.principal.Principal`.

Modes (``auth:`` in config): ``none`` (every caller is anonymous, the registry is open),
``htpasswd`` (HTTP Basic: htpasswd users, and robots as ``robot$NAME``) and ``token`` (Bearer
JWTs verified against the trust bundle, issuer and service). A request without credentials is
anonymous; what anonymous may do is the authorizer's business.

Password checks (:meth:`Authenticator.password_login`, used by the Basic mode and the token
service) are throttled by :class:`~regcore.auth.ratelimit.LoginLimiter` *before* the password
is looked at, and run bcrypt in a worker thread. Failures raise :class:`LoginFailed` (reason
for the audit trail, never the password); throttled attempts raise :class:`LoginThrottled`.
A bad token raises :class:`LoginFailed` with reason ``invalid token`` and ``invalid_token``
set, so the challenge can say so. :meth:`Authenticator.challenge` writes ``WWW-Authenticate``
exactly as registry:2 does (``Basic realm="..."`` / ``Bearer realm="...",service="..."
[,scope="..."][,error="..."]``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from regcore import errors
from regcore.auth.principal import ROBOT_PREFIX, Principal
from regcore.auth.ratelimit import LoginLimiter
from regcore.auth.scopes import Access, access_from_claims

if TYPE_CHECKING:  # built by the caller; PyJWT and bcrypt load only where configured
    from regcore.auth.htpasswd import Htpasswd
    from regcore.auth.robots import RobotStore
    from regcore.auth.tokens import TokenVerifier

__all__ = ["Authenticator", "LoginFailed", "LoginThrottled", "parse_basic"]

Mode = Literal["none", "htpasswd", "token"]


class LoginFailed(Exception):
    """Credentials were given and are wrong (``reason`` is safe to log)."""

    def __init__(self, login: str, reason: str, *, invalid_token: bool = False) -> None:
        super().__init__(reason)
        self.login = login
        self.reason = reason
        self.invalid_token = invalid_token


class LoginThrottled(Exception):
    """Too many recent failures for this login or address; retry after ``retry_after`` s."""

    def __init__(self, login: str, retry_after: int) -> None:
        super().__init__(f"throttled for {retry_after}s")
        self.login = login
        self.retry_after = retry_after


def parse_basic(header: str) -> tuple[str, str] | None:
    """``(login, password)`` of a ``Basic`` header; None for another scheme. Raises
    LoginFailed for a malformed Basic value."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise LoginFailed("", "malformed Basic credentials") from None
    login, sep, password = decoded.partition(":")
    if not sep:
        raise LoginFailed("", "malformed Basic credentials")
    return login, password


def _quote(value: str) -> str:
    return json.dumps(value)  # Go's %q for the ASCII values registries use


class Authenticator:
    """See the module docstring. ``realm``: the challenge's realm (htpasswd realm or the
    token realm); ``service``: the token audience; ``own_tokens``: valid tokens come from this
    origin's own token service (so its roles explain them)."""

    def __init__(
        self,
        mode: Mode,
        *,
        realm: str = "quayside",
        service: str | None = None,
        htpasswd: Htpasswd | None = None,
        robots: RobotStore | None = None,
        verifier: TokenVerifier | None = None,
        limiter: LoginLimiter | None = None,
        own_tokens: bool = False,
    ) -> None:
        self.mode = mode
        self.realm = realm
        self.service = service
        self.htpasswd = htpasswd
        self.robots = robots
        self.verifier = verifier
        self.limiter = limiter or LoginLimiter()
        self.own_tokens = own_tokens

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    # -- challenges ----------------------------------------------------------------------
    def challenge(self, scopes: Sequence[Access] = (), error: str | None = None) -> str:
        """The ``WWW-Authenticate`` value for this mode (registry:2's format)."""
        if self.mode != "token":
            return f"Basic realm={_quote(self.realm)}"
        value = f"Bearer realm={_quote(self.realm)},service={_quote(self.service or '')}"
        scope = " ".join(str(a) for a in scopes if a.actions)
        if scope:
            value += f",scope={_quote(scope)}"
        if error:
            value += f",error={_quote(error)}"
        return value

    def unauthorized(
        self, scopes: Sequence[Access] = (), error: str | None = None
    ) -> errors.RegistryError:
        """401 UNAUTHORIZED with the challenge and registry:2's ``detail`` (the access the
        request needs)."""
        detail = [
            {"Type": a.type, "Name": a.name, "Action": action}
            for a in scopes
            for action in a.actions
        ]
        return errors.Unauthorized(
            detail or None, headers={"WWW-Authenticate": self.challenge(scopes, error)}
        )

    # -- authentication ------------------------------------------------------------------
    async def authenticate(self, header: str | None, address: str) -> Principal:
        """The principal of a request. Raises LoginFailed, LoginThrottled."""
        if not header or self.mode == "none":
            return Principal("anonymous", "", address)
        if self.mode == "token":
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise LoginFailed("", "not a Bearer token", invalid_token=True)
            return self.token_principal(token.strip(), address)
        basic = parse_basic(header)
        if basic is None:
            raise LoginFailed("", "not Basic credentials")
        return await self.password_login(basic[0], basic[1], address)

    def token_principal(self, token: str, address: str) -> Principal:
        """The principal a Bearer token stands for. Raises LoginFailed (invalid token)."""
        if self.verifier is None:
            raise LoginFailed("", "tokens are not accepted here", invalid_token=True)
        try:
            claims = self.verifier.verify(token)
        except errors.Unauthorized as exc:
            raise LoginFailed("", exc.detail or "invalid token", invalid_token=True) from None
        sub = claims.get("sub")
        login = sub if isinstance(sub, str) else ""
        return Principal.from_login(
            login,
            address,
            access=tuple(access_from_claims(claims)),
            own_token=self.own_tokens,
        )

    async def password_login(self, login: str, password: str, address: str) -> Principal:
        """Check a login name and password (users and ``robot$`` robots), throttled.

        Raises LoginThrottled before looking at the password while blocked, else
        LoginFailed (counted) for a wrong login."""
        retry = self.limiter.retry_after(login, address)
        if retry is not None:
            raise LoginThrottled(login, retry)
        if login.startswith(ROBOT_PREFIX) and self.robots is not None:
            robot, reason = await asyncio.to_thread(
                self.robots.check, login[len(ROBOT_PREFIX) :], password
            )
            ok = robot is not None
        elif self.htpasswd is not None and login:
            ok = await asyncio.to_thread(self.htpasswd.verify, login, password)
            reason = "ok" if ok else "bad credentials"
        else:
            ok, reason = False, "bad credentials"
        if not ok:
            self.limiter.failed(login, address)
            raise LoginFailed(
                login, f"robot {reason}" if login.startswith(ROBOT_PREFIX) else reason
            )
        self.limiter.succeeded(login, address)
        return Principal.from_login(login, address)
