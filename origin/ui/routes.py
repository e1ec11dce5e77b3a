"""The web UI's pages (server-rendered HTML, GET only except sign-in and sign-out).

::

    GET  /ui/                                   repositories the viewer may pull
    GET  /ui/r/<name>/                          its tags: digests, push and pull times
    GET  /ui/r/<name>/-/tags/<tag>              the tag's manifest (as below)
    GET  /ui/r/<name>/-/manifests/<digest>      platforms or layers, signatures and verdict,
                                                scan summary, other attached artifacts
    GET  /ui/r/<name>/-/audit                   the repository's audit trail (admins)
    GET  /ui/login, POST /ui/login, POST /ui/logout

(``/-/`` cannot be part of a repository name: a name component never is ``-`` alone.)

Answers: a repository the viewer may not pull is 303 to the sign-in page for an anonymous
viewer (with authentication on) and 403 for a signed-in one, checked before whether it exists,
so the answer tells nothing about names the viewer may not see; an unknown repository, tag or
manifest is 404; a bad name, tag or digest 400. Sign-in: wrong credentials show the form again
with the error (200: a 401 would need a ``WWW-Authenticate`` challenge, and a Basic one would
make browsers open their own dialog), a missing or wrong CSRF token (or a foreign ``Origin``)
403, throttled 429 with ``Retry-After``; the form always comes back with a fresh token. Nothing on any page is a secret: no password, password hash,
session cookie or key is ever rendered (the CSRF token of the viewer's own session is, in its
forms, which is its purpose).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web

from origin import state
from origin.audit import read_events
from origin.ui import keys
from origin.ui.inventory import inventory_for
from origin.ui.manifestview import load_manifest_view
from origin.ui.session import LOGIN_COOKIE, SESSION_COOKIE, csrf_matches
from origin.ui.trust import scan_of, verdict_of
from origin.ui.viewer import UiAccess, Viewer
from regcore import errors
from regcore.auth.authenticator import LoginFailed, LoginThrottled
from regcore.auth.principal import in_networks
from regcore.digest import Digest
from regcore.reference import validate_name, validate_tag

__all__ = ["STATIC_DIR", "PageError", "add_routes", "render", "see_other"]

STATIC_DIR = Path(__file__).parent / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PAGE = 100
AUDIT_LINES = 200


class PageError(Exception):
    """Render the error page with ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def see_other(location: str) -> web.Response:
    """A 303 to a local ``location`` (returned, so cookies can be set on it)."""
    return web.Response(status=303, headers={"Location": location})


def _ui(request: web.Request) -> keys.UiState:
    return request.app[keys.UI]


def render(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> Any:
    ui = _ui(request)
    viewer: Viewer = request[keys.VIEWER]
    base = {
        "viewer": viewer,
        "auth_enabled": viewer.auth_enabled,
        "csrf": viewer.session.csrf if viewer.session is not None else "",
        "here": request.path_qs,
        "readonly": ui.readonly,
        "request_host": request.host,
    }
    return aiohttp_jinja2.render_template(template, request, {**base, **ctx}, status=status)


def _login_redirect(request: web.Request) -> web.HTTPSeeOther:
    target = request.app.router["ui_login"].url_for().with_query(next=request.path_qs)
    return web.HTTPSeeOther(str(target))


def _check_pull(request: web.Request, name: str) -> None:
    access: UiAccess = _ui(request).access
    viewer: Viewer = request[keys.VIEWER]
    if access.may_pull(viewer, name):
        return
    if viewer.auth_enabled and not viewer.signed_in:
        raise _login_redirect(request)
    raise PageError(403, "You may not view this repository.")


def _page_number(request: web.Request) -> int:
    try:
        return max(1, int(request.query.get("page", "1")))
    except ValueError:
        raise PageError(400, "The page number is not a number.") from None


# -- pages ------------------------------------------------------------------------------------
async def repositories(request: web.Request) -> Any:
    ui = _ui(request)
    viewer: Viewer = request[keys.VIEWER]
    names = ui.access.visible(viewer, await request.config_dict[state.REPOS].catalog())
    page = _page_number(request)
    shown = names[(page - 1) * PAGE : page * PAGE]
    rows = await inventory_for(request.config_dict, ui.inventory(request)).repositories(shown)
    quotas = {r.quota.namespace: r.quota for r in rows if r.quota is not None}
    return render(
        request,
        "repositories.html",
        {
            "title": "Repositories",
            "rows": rows,
            "quotas": sorted(quotas.values(), key=lambda q: q.namespace),
            "total": len(names),
            "page": page,
            "pages": max(1, -(-len(names) // PAGE)),
            "pulls_recorded": inventory_for(
                request.config_dict, ui.inventory(request)
            ).pulls_recorded,
        },
    )


async def repository_path(request: web.Request) -> Any:
    """Dispatch ``/ui/r/<name>/...`` (see the module docstring)."""
    path = request.match_info["path"]
    name, sep, rest = path.partition("/-/")
    if not sep:
        if not name.endswith("/"):
            raise web.HTTPPermanentRedirect(f"{request.path}/")
        name, rest = name[:-1], ""
    try:
        name = validate_name(name)
    except errors.RegistryError:
        raise PageError(400, "That is not a valid repository name.") from None
    _check_pull(request, name)
    kind, _, arg = rest.partition("/")
    if rest == "":
        return await _tags(request, name)
    if kind == "tags" and arg:
        try:
            tag = validate_tag(arg)
        except errors.RegistryError:
            raise PageError(400, "That is not a valid tag.") from None
        try:
            digest = await request.config_dict[state.REPOS].resolve_tag(name, tag)
        except errors.RegistryError:
            raise PageError(404, f"No tag {tag} in {name}.") from None
        return await _manifest(request, name, digest, tag)
    if kind == "manifests" and arg:
        try:
            digest = Digest.parse(arg)
        except errors.RegistryError:
            raise PageError(400, "That is not a valid digest.") from None
        return await _manifest(request, name, digest, None)
    if rest == "audit":
        return await _audit(request, name)
    raise PageError(404, "No such page.")


async def _tags(request: web.Request, name: str) -> Any:
    ui = _ui(request)
    source = inventory_for(request.config_dict, ui.inventory(request))
    row = await source.repository(name)
    if row is None:
        raise PageError(404, f"No repository {name}.")
    page = _page_number(request)
    tags = sorted(row.tags, key=lambda t: (-(t.pushed or 0.0), t.tag))
    return render(
        request,
        "repository.html",
        {
            "title": name,
            "repo": row,
            "tags": tags[(page - 1) * PAGE : page * PAGE],
            "page": page,
            "pages": max(1, -(-len(tags) // PAGE)),
            "pulls_recorded": source.pulls_recorded,
            "is_admin": ui.access.is_admin(request[keys.VIEWER], name),
        },
    )


async def _manifest(request: web.Request, name: str, digest: Digest, tag: str | None) -> Any:
    ui = _ui(request)
    cfg = request.config_dict
    try:
        view = await load_manifest_view(
            cfg[state.REPOS],
            cfg[state.STORE],
            name,
            digest,
            max_bytes=cfg[state.MAX_MANIFEST_BYTES],
            persist=not ui.readonly,
        )
    except LookupError:
        raise PageError(404, f"No manifest {digest} in {name}.") from None
    trust = ui.trust(request)
    verdict, scan = await asyncio.gather(
        verdict_of(trust, name, str(digest)), scan_of(trust, name, str(digest))
    )
    title = f"{name}:{tag}" if tag else f"{name}@{digest.hex[:12]}"
    return render(
        request,
        "manifest.html",
        {
            "title": title,
            "tag": tag,
            "view": view,
            "verdict": verdict,
            "scan": scan,
            "is_admin": ui.access.is_admin(request[keys.VIEWER], name),
        },
    )


async def _audit(request: web.Request, name: str) -> Any:
    ui = _ui(request)
    if not ui.access.is_admin(request[keys.VIEWER], name):
        raise PageError(403, "Only administrators of this repository may read its audit trail.")
    audit = ui.access.access.audit
    enabled = bool(audit.config.enabled and audit.path)
    events: list[dict[str, Any]] = []
    if enabled:
        events = await asyncio.to_thread(
            _events_of, audit.path, audit.config.backups, name, AUDIT_LINES
        )
    return render(
        request,
        "audit.html",
        {"title": f"Audit trail of {name}", "name": name, "events": events, "enabled": enabled},
    )


def _events_of(path: str, backups: int, name: str, limit: int) -> list[dict[str, Any]]:
    last: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
    for event in read_events(path, backups):
        if event.get("repository") == name:
            last.append(event)
    return list(reversed(last))


# -- signing in and out -----------------------------------------------------------------------
def _safe_next(value: str | None) -> str:
    """A local UI path to go to after signing in (never another site)."""
    if (
        not value
        or not value.startswith("/ui/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        return "/ui/"
    return value


def _secure(request: web.Request) -> bool:
    ui = _ui(request)
    if request.secure or ui.tls:
        return True
    trusted = ui.access.access.trusted
    proto = request.headers.get("X-Forwarded-Proto", "").lower()
    return bool(trusted) and in_networks(request.remote or "", trusted) and proto == "https"


def _login_form(
    request: web.Request, status: int = 200, error: str = "", login: str = "", **headers: str
) -> web.StreamResponse:
    ui = _ui(request)
    token, cookie = ui.access.signer.new_login_token()
    resp = render(
        request,
        "login.html",
        {
            "title": "Sign in",
            "login_csrf": token,
            "error": error,
            "login": login,
            "next": _safe_next(request.query.get("next") or request.get(keys.NEXT)),
        },
        status=status,
    )
    resp.set_cookie(
        LOGIN_COOKIE,
        cookie,
        path="/ui/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        max_age=int(ui.access.signer.login_ttl),
    )
    resp.headers.update(headers)
    return resp


async def login_page(request: web.Request) -> web.StreamResponse:
    viewer: Viewer = request[keys.VIEWER]
    if not viewer.auth_enabled:
        raise web.HTTPSeeOther("/ui/")
    return _login_form(request)


def _foreign_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    return origin == "null" or urlsplit(origin).netloc.lower() != request.host.lower()


async def login_submit(request: web.Request) -> web.StreamResponse:
    ui = _ui(request)
    viewer: Viewer = request[keys.VIEWER]
    if not viewer.auth_enabled:
        raise web.HTTPSeeOther("/ui/")
    form = await request.post()
    login = str(form.get("username", ""))[:256]
    password = str(form.get("password", ""))
    request[keys.NEXT] = _safe_next(str(form.get("next", "")))
    token_ok = ui.access.signer.login_token_ok(
        request.cookies.get(LOGIN_COOKIE), str(form.get("csrf", ""))
    )
    if not token_ok or _foreign_origin(request):
        return _login_form(
            request, 403, "The form expired or did not come from this page. Try again.", login
        )
    try:
        cookie = await ui.access.sign_in(request, login, password)
    except LoginThrottled as exc:
        return _login_form(
            request,
            429,
            f"Too many failed sign-ins. Try again in {exc.retry_after} seconds.",
            login,
            **{"Retry-After": str(exc.retry_after)},
        )
    except LoginFailed:
        return _login_form(request, 200, "Wrong user name or password.", login)
    resp = see_other(request[keys.NEXT])
    resp.set_cookie(
        SESSION_COOKIE,
        cookie,
        path="/ui/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        max_age=int(ui.access.signer.ttl),
    )
    resp.del_cookie(LOGIN_COOKIE, path="/ui/")
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    ui = _ui(request)
    viewer: Viewer = request[keys.VIEWER]
    form = await request.post()
    if viewer.session is not None:
        if not csrf_matches(viewer.session, str(form.get("csrf", ""))) or _foreign_origin(request):
            raise PageError(403, "The sign-out form did not come from this site.")
        ui.access.sign_out(viewer)
    resp = see_other("/ui/login" if viewer.auth_enabled else "/ui/")
    resp.del_cookie(SESSION_COOKIE, path="/ui/")
    return resp


async def not_found(request: web.Request) -> Any:
    raise PageError(404, "No such page.")


async def slash(request: web.Request) -> Any:
    return see_other("/ui/")


def add_routes(app: web.Application, page: Callable[[Handler], Handler]) -> None:
    """Register the pages on ``app``, each wrapped by ``page`` (viewer, HTML errors)."""
    r = app.router
    r.add_get("/ui", page(slash), name="ui_slash")
    r.add_get("/ui/", page(repositories), name="ui_repositories")
    r.add_get("/ui/login", page(login_page), name="ui_login")
    r.add_post("/ui/login", page(login_submit), name="ui_login_submit")
    r.add_post("/ui/logout", page(logout), name="ui_logout")
    r.add_get("/ui/r/{path:.+}", page(repository_path), name="ui_repository")
    r.add_static("/ui/static/", STATIC_DIR, name="ui_static")
    r.add_get("/ui/{tail:.*}", page(not_found), name="ui_not_found")
