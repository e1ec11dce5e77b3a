"""The one access middleware of the origin: every route asks the authorizer here.

What a request needs (registry:2's rules): ``GET``/``HEAD`` on a repository → ``pull``;
``POST``/``PUT``/``PATCH`` → ``pull`` and ``push``; ``DELETE`` → ``delete``; a cross-repository
mount (``?mount=&from=``) also ``pull`` on ``from`` (without it the mount is dropped and a plain
upload starts, as distribution falls back); ``GET /v2/_catalog`` → a signed-in caller (the
handler filters the names with :func:`visible_repositories`); ``/v2/`` → any valid credentials
when authentication is on (the login check of ``docker login``). ``/healthz``, ``/metrics`` and
the token service's ``/auth/*`` are not guarded here.

Answers: wrong or missing credentials → 401 ``UNAUTHORIZED`` with the challenge (``Basic
realm=...`` or ``Bearer realm=...,service=...,scope=...``; a token lacking the scope gets
``error="insufficient_scope"`` so clients fetch a better one); a known caller who may not do
it → 403 ``DENIED`` (with a token from our own service: when the caller's roles would not allow
it either, or the address is outside the action's allow-list); too many failed logins → 429
``TOOMANYREQUESTS`` with ``Retry-After``. Refusals happen before the handler runs, so they
change nothing on disk. Each refusal and each successful pull, push, tag move and delete is
written to the audit trail (:mod:`origin.audit`) with the request id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import hdrs, web
from multidict import MultiDict

from origin import state
from origin.access import ACCESS, AccessControl
from regcore import errors
from regcore.auth.authenticator import LoginFailed, LoginThrottled
from regcore.auth.principal import Principal
from regcore.auth.scopes import Access
from regcore.http import Handler
from regcore.reference import is_valid_tag, validate_name

__all__ = ["PRINCIPAL", "REQUEST_ID", "access_middleware", "visible_repositories"]

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("quayside_principal", Principal)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("quayside_request_id", str)
_METHOD_ACTIONS = {
    "GET": ("pull",),
    "HEAD": ("pull",),
    "POST": ("pull", "push"),
    "PUT": ("pull", "push"),
    "PATCH": ("pull", "push"),
    "DELETE": ("delete",),
}


@dataclass(frozen=True)
class _Need:
    kind: str  # "public", "base", "catalog", "repository"
    repository: str = ""
    actions: tuple[str, ...] = ()
    mount_from: str | None = None

    def scopes(self) -> list[Access]:
        if self.kind == "catalog":
            return [Access("registry", "catalog", ("*",))]
        if self.kind != "repository":
            return []
        out = [Access("repository", self.repository, self.actions)]
        if self.mount_from and self.mount_from != self.repository:
            out.append(Access("repository", self.mount_from, ("pull",)))
        return out


def _need(request: web.Request) -> _Need:
    match = request.match_info
    if match.http_exception is not None or not request.path.startswith("/v2/"):
        return _Need("public")
    resource = match.route.resource
    if resource is not None and resource.name == "base":
        return _Need("base")
    if request.path == "/v2/_catalog":
        return _Need("catalog")
    if "name" not in match:
        return _Need("public")
    name = validate_name(match["name"])
    actions = _METHOD_ACTIONS.get(request.method, ("pull", "push", "delete"))
    mount = request.query.get("from") if request.method == "POST" else None
    return _Need("repository", name, actions, mount or None)


def visible_repositories(request: web.Request, names: Iterable[str]) -> list[str]:
    """The names of ``names`` the caller may pull (all of them without access control)."""
    access = request.app.get(ACCESS)
    principal = request.get(PRINCIPAL)
    if access is None or principal is None:
        return list(names)
    return access.authorizer.visible(principal, names)


def _refusal(ac: AccessControl, principal: Principal, need: _Need) -> errors.RegistryError:
    """401 (credentials could help) or 403 (they could not) for a refused ``need``."""
    authn, authz = ac.authenticator, ac.authorizer
    scopes = need.scopes()
    address_ok = all(
        authz.address_allowed(a, principal.address) for acc in scopes for a in acc.actions
    )
    if not address_ok:
        return errors.Denied(message="requested access is not allowed from this address")
    if principal.access is not None:
        if principal.own_token and not principal.anonymous:
            roles_ok = all(
                a in authz.role_actions(principal, acc.name)
                for acc in scopes
                if acc.type == "repository"
                for a in acc.actions
            )
            if not roles_ok or (need.kind == "catalog"):
                return errors.Denied()
        return authn.unauthorized(scopes, "insufficient_scope")
    if principal.anonymous and authn.enabled:
        return authn.unauthorized(scopes)
    return errors.Denied()


def _audit_denied(
    ac: AccessControl, request: web.Request, principal: Principal, need: _Need, err: Exception
) -> None:
    status = getattr(err, "status", 0)
    ac.audit.record(
        "denied",
        actor=principal.actor,
        client=principal.address,
        result={401: "unauthorized", 403: "forbidden", 429: "throttled"}.get(status, "refused"),
        repository=need.repository or None,
        reference=request.match_info.get("reference") or request.match_info.get("digest"),
        request_id=request[REQUEST_ID],
        reason=f"{request.method} {need.kind}",
    )


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """See the module docstring. Raises the 401/403/429 RegistryErrors it decides on."""
    ac: AccessControl | None = request.app.get(ACCESS)
    if ac is None:
        return await handler(request)
    need = _need(request)
    if need.kind == "public":
        return await handler(request)
    request[REQUEST_ID] = ac.request_id(request)
    address = ac.client_address(request)
    try:
        principal = await ac.authenticator.authenticate(
            request.headers.get(hdrs.AUTHORIZATION), address
        )
    except LoginThrottled as exc:
        anon = Principal.from_login(exc.login, address)
        ac.audit.record(
            "login",
            actor=anon.actor,
            client=address,
            result="throttled",
            request_id=request[REQUEST_ID],
            reason="too many failed logins",
        )
        raise errors.TooManyRequests(
            {"retry_after": exc.retry_after},
            message="too many failed logins",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    except LoginFailed as exc:
        who = Principal.from_login(exc.login, address)
        ac.audit.record(
            "login",
            actor=who.actor,
            client=address,
            result="failed",
            request_id=request[REQUEST_ID],
            reason=exc.reason,
        )
        raise ac.authenticator.unauthorized(
            need.scopes(), "invalid_token" if exc.invalid_token else None
        ) from None
    request[PRINCIPAL] = principal
    authz = ac.authorizer

    if need.kind == "base":
        if ac.authenticator.enabled and principal.anonymous:
            raise ac.authenticator.unauthorized()
        resp = await handler(request)
        if not principal.anonymous and principal.access is None and resp.status == 200:
            ac.audit.record(
                "login", actor=principal.actor, client=address, request_id=request[REQUEST_ID]
            )
        return resp

    if need.kind == "catalog":
        if not authz.may_list_catalog(principal):
            err = _refusal(ac, principal, need)
            _audit_denied(ac, request, principal, need, err)
            raise err
        return await handler(request)

    if not all(authz.allowed(principal, a, need.repository) for a in need.actions):
        err = _refusal(ac, principal, need)
        _audit_denied(ac, request, principal, need, err)
        raise err
    if need.mount_from and not authz.allowed(principal, "pull", need.mount_from):
        query = MultiDict(request.query)
        query.popall("mount", None)
        query.popall("from", None)
        request = request.clone(rel_url=request.rel_url.with_query(query))
    previous = await _tag_before(request, need)
    resp = await handler(request)
    _audit_done(ac, request, principal, need, resp, previous)
    return resp


async def _tag_before(request: web.Request, need: _Need) -> str | None:
    """For a manifest PUT by tag: the digest the tag points at now (None if none)."""
    reference = request.match_info.get("reference")
    if request.method != "PUT" or reference is None or not is_valid_tag(reference):
        return None
    try:
        return str(await request.app[state.REPOS].resolve_tag(need.repository, reference))
    except errors.RegistryError:
        return None


def _audit_done(
    ac: AccessControl,
    request: web.Request,
    principal: Principal,
    need: _Need,
    resp: web.StreamResponse,
    previous: str | None,
) -> None:
    resource = request.match_info.route.resource
    pattern = resource.canonical if resource is not None else ""
    method, status = request.method, resp.status
    digest = resp.headers.get("Docker-Content-Digest")
    reference = request.match_info.get("reference") or request.match_info.get("digest")
    common = {
        "actor": principal.actor,
        "client": principal.address,
        "repository": need.repository,
        "request_id": request[REQUEST_ID],
    }
    if "/manifests/" in pattern:
        if method == "GET" and status == 200:
            ac.audit.record("pull", reference=reference, digest=digest, **common)
        elif method == "PUT" and status == 201:
            ac.audit.record("push", reference=reference, digest=digest, **common)
            if reference is not None and is_valid_tag(reference) and previous != digest:
                ac.audit.record(
                    "tag",
                    reference=reference,
                    digest=digest,
                    moved_from=previous,
                    moved_to=digest,
                    **common,
                )
        elif method == "DELETE" and status == 202:
            ac.audit.record("delete", reference=reference, **common)
    elif "/blobs/" in pattern:
        if method in ("PUT", "POST") and status == 201:
            ac.audit.record("push", digest=digest, **common)
        elif method == "DELETE" and status == 202:
            ac.audit.record("delete", digest=reference, **common)
