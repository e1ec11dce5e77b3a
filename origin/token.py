"""The built-in token service (Docker token spec + its OAuth2 form) and the JWKS document.

Routes (added when ``quayside.auth.tokenservice.enabled``):

- ``GET /auth/token?service=S&scope=...&scope=...[&offline_token=true][&client_id=...]`` with
  HTTP Basic credentials (a user, or ``robot$NAME`` and its secret) or none (anonymous);
- ``POST /auth/token`` (``application/x-www-form-urlencoded``): ``grant_type=password``
  (``username``, ``password``) or ``grant_type=refresh_token`` (``refresh_token``), with
  ``service``, ``client_id``, ``scope`` (space separated), ``access_type=offline``;
- ``GET /auth/jwks.json``: the public signing key(s) with their ``kid``.

Guarantees: the token's ``access`` is the intersection of the requested scopes and what the
caller's roles allow (:meth:`regcore.auth.authorizer.Authorizer.grant`; asking for more is not
an error, the token just grants less); ``aud`` is the service, ``sub`` the login name; lifetime
``tokenservice.expiration`` (default 300 s). Refresh tokens (``offline_token=true`` /
``access_type=offline``, signed users and robots only) are JWTs for the audience
``<service>#refresh`` (a registry never accepts them as access tokens) bound to the caller's
current password hash or robot secret: changing the password, removing the user or revoking
the robot invalidates them. Wrong credentials → 401 (and a ``Basic`` challenge for GET),
throttled → 429 with ``Retry-After``, a foreign ``service`` → 400. Every issue and refusal is
audited (scopes granted, never the token).
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web

from origin.access import ACCESS, AccessControl
from origin.authz import PRINCIPAL, REQUEST_ID
from regcore.auth.authenticator import LoginFailed, LoginThrottled, parse_basic
from regcore.auth.principal import Principal
from regcore.auth.scopes import parse_scopes

if TYPE_CHECKING:
    from regcore.auth.tokens import TokenIssuer

__all__ = ["REFRESH_TTL", "add_routes"]

REFRESH_TTL = 30 * 24 * 3600


def _oauth_error(status: int, error: str, details: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": details, "details": details},
        status=status,
        headers=headers,
    )


def _binding(ac: AccessControl, principal: Principal) -> str | None:
    """A fingerprint of the principal's current credential (None: no longer valid)."""
    if principal.kind == "robot":
        robot = ac.robots.get(principal.name)
        secret = robot.secret_sha256 if robot is not None and robot.revoked is None else None
    elif principal.kind == "user" and ac.users is not None:
        secret = ac.users.load().get(principal.name)
    else:
        secret = None
    return hashlib.sha256(secret.encode()).hexdigest()[:32] if secret else None


def _refresh_token(ac: AccessControl, issuer: TokenIssuer, principal: Principal) -> str | None:
    import jwt  # with the token service only (an issuer exists): PyJWT is loaded with it

    bound = _binding(ac, principal)
    if bound is None:
        return None
    now = int(time.time())
    claims = {
        "iss": issuer.issuer,
        "sub": principal.login,
        "aud": issuer.service + "#refresh",
        "iat": now,
        "exp": now + REFRESH_TTL,
        "qs_bind": bound,
    }
    return jwt.encode(
        claims, issuer.key, algorithm=issuer.algorithm, headers={"kid": issuer.key_id}
    )


def _principal_from_refresh(
    ac: AccessControl, issuer: TokenIssuer, token: str, address: str
) -> Principal:
    import jwt

    try:
        claims = jwt.decode(
            token,
            issuer.cert.public_key(),  # type: ignore[arg-type]
            algorithms=[issuer.algorithm],
            audience=issuer.service + "#refresh",
            issuer=issuer.issuer,
            options={"require": ["exp", "sub", "aud", "iss"]},
        )
    except jwt.PyJWTError:
        raise LoginFailed("", "invalid refresh token") from None
    principal = Principal.from_login(str(claims["sub"]), address)
    if principal.anonymous or _binding(ac, principal) != claims.get("qs_bind"):
        raise LoginFailed(principal.login, "refresh token no longer valid")
    return principal


async def _issue(
    request: web.Request,
    ac: AccessControl,
    principal: Principal,
    scopes: list[str],
    *,
    offline: bool,
    refresh: str | None = None,
    oauth: bool = False,
) -> web.Response:
    issuer = ac.issuer
    assert issuer is not None
    granted = ac.authorizer.grant(principal, parse_scopes(scopes))
    ttl = int(ac.config.tokenservice.expiration)
    issued = issuer.issue(principal.login, granted, ttl=ttl)
    body: dict[str, Any] = issued.to_response()
    if oauth:
        body["scope"] = " ".join(str(a) for a in granted)
    if refresh is not None:
        body["refresh_token"] = refresh
    elif offline and not principal.anonymous:
        new_refresh = _refresh_token(ac, issuer, principal)
        if new_refresh is not None:
            body["refresh_token"] = new_refresh
    ac.audit.record(
        "token",
        actor=principal.actor,
        client=principal.address,
        request_id=request.get(REQUEST_ID),
        scopes=[str(a) for a in granted],
    )
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def _login_refused(
    request: web.Request, ac: AccessControl, exc: Exception, address: str, *, basic: bool
) -> web.Response:
    login = getattr(exc, "login", "")
    who = Principal.from_login(login, address)
    if isinstance(exc, LoginThrottled):
        ac.audit.record(
            "login", actor=who.actor, client=address, result="throttled", reason="token service"
        )
        return _oauth_error(
            429,
            "too_many_requests",
            "too many failed logins",
            **{"Retry-After": str(exc.retry_after)},
        )
    assert isinstance(exc, LoginFailed)
    ac.audit.record("login", actor=who.actor, client=address, result="failed", reason=exc.reason)
    headers = (
        {"WWW-Authenticate": f'Basic realm="{ac.config.tokenservice.service}"'} if basic else {}
    )
    return _oauth_error(401, "invalid_grant", "incorrect username or password", **headers)


def _service_ok(ac: AccessControl, service: str | None) -> bool:
    return not service or service == ac.config.tokenservice.service


async def get_token(request: web.Request) -> web.Response:
    ac = request.app[ACCESS]
    address = ac.client_address(request)
    if not _service_ok(ac, request.query.get("service")):
        return _oauth_error(400, "invalid_request", "unknown service")
    header = request.headers.get(hdrs.AUTHORIZATION)
    principal = Principal("anonymous", "", address)
    try:
        if header:
            basic = parse_basic(header)
            if basic is None:
                raise LoginFailed("", "not Basic credentials")
            principal = await ac.authenticator.password_login(basic[0], basic[1], address)
            ac.audit.record("login", actor=principal.actor, client=address, reason="token service")
    except (LoginFailed, LoginThrottled) as exc:
        return _login_refused(request, ac, exc, address, basic=True)
    request[PRINCIPAL] = principal
    offline = request.query.get("offline_token", "").lower() in ("true", "1")
    return await _issue(request, ac, principal, request.query.getall("scope", []), offline=offline)


async def post_token(request: web.Request) -> web.Response:
    ac = request.app[ACCESS]
    issuer = ac.issuer
    assert issuer is not None
    address = ac.client_address(request)
    form = await request.post()
    service = form.get("service")
    if not _service_ok(ac, service if isinstance(service, str) else None):
        return _oauth_error(400, "invalid_request", "unknown service")
    grant = form.get("grant_type")
    scope = form.get("scope")
    scopes = [scope] if isinstance(scope, str) and scope else []
    offline = form.get("access_type") == "offline"
    try:
        if grant == "password":
            username, password = form.get("username"), form.get("password")
            if not isinstance(username, str) or not isinstance(password, str):
                return _oauth_error(400, "invalid_request", "username and password required")
            principal = await ac.authenticator.password_login(username, password, address)
            ac.audit.record("login", actor=principal.actor, client=address, reason="token service")
            return await _issue(request, ac, principal, scopes, offline=offline, oauth=True)
        if grant == "refresh_token":
            token = form.get("refresh_token")
            if not isinstance(token, str) or not token:
                return _oauth_error(400, "invalid_request", "refresh_token required")
            principal = _principal_from_refresh(ac, issuer, token, address)
            return await _issue(
                request, ac, principal, scopes, offline=False, refresh=token, oauth=True
            )
    except (LoginFailed, LoginThrottled) as exc:
        return _login_refused(request, ac, exc, address, basic=False)
    return _oauth_error(
        400, "unsupported_grant_type", "grant_type must be password or refresh_token"
    )


async def jwks(request: web.Request) -> web.Response:
    from regcore.auth.signing import jwks_document

    issuer = request.app[ACCESS].issuer
    assert issuer is not None
    return web.json_response(jwks_document(issuer), headers={"Cache-Control": "max-age=300"})


def add_routes(app: web.Application) -> None:
    """Register ``/auth/token`` (GET, POST) and ``/auth/jwks.json``."""
    app.router.add_route("GET", "/auth/token", get_token, name="auth_token")
    app.router.add_route("POST", "/auth/token", post_token)
    app.router.add_route("GET", "/auth/jwks.json", jwks, name="auth_jwks")
