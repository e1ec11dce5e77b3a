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
manifest is 404; a bad name, tag or digest 400 (sign-in and sign-out: :mod:`origin.ui.signin`).
Nothing on any page is a secret: no password, password hash, session cookie or key is ever
rendered (the CSRF token of the viewer's own session is, in its forms, which is its purpose).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from origin import state
from origin.audit import read_events
from origin.ui import keys
from origin.ui.inventory import inventory_for
from origin.ui.manifestview import load_manifest_view
from origin.ui.render import PageError, render, see_other, ui_state
from origin.ui.signin import login_page, login_submit, logout
from origin.ui.trust import scan_of, verdict_of
from origin.ui.viewer import UiAccess, Viewer
from regcore import errors
from regcore.digest import Digest
from regcore.reference import validate_name, validate_tag

__all__ = ["STATIC_DIR", "Handler", "add_routes"]

STATIC_DIR = Path(__file__).parent / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PAGE = 100
AUDIT_LINES = 200


def _login_redirect(request: web.Request) -> web.HTTPSeeOther:
    target = request.app.router["ui_login"].url_for().with_query(next=request.path_qs)
    return web.HTTPSeeOther(str(target))


def _check_pull(request: web.Request, name: str) -> None:
    access: UiAccess = ui_state(request).access
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
    ui = ui_state(request)
    viewer: Viewer = request[keys.VIEWER]
    names = ui.access.visible(viewer, await ui.cache.catalog())
    page = _page_number(request)
    shown = names[(page - 1) * PAGE : page * PAGE]
    source = inventory_for(request.config_dict, ui.inventory(request), ui.cache)
    rows = await source.repositories(shown)
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
            "pulls_recorded": source.pulls_recorded,
        },
    )


async def repository_path(request: web.Request) -> Any:
    """Dispatch ``/ui/r/<name>/...`` (see the module docstring)."""
    path = request.match_info["path"]
    name, sep, rest = path.partition("/-/")
    add_slash = not sep and not name.endswith("/")
    if not sep and not add_slash:
        name = name[:-1]
    try:
        name = validate_name(name)
    except errors.RegistryError:
        raise PageError(400, "That is not a valid repository name.") from None
    if add_slash:
        raise web.HTTPPermanentRedirect(f"/ui/r/{name}/")
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
    ui = ui_state(request)
    source = inventory_for(request.config_dict, ui.inventory(request), ui.cache)
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
    ui = ui_state(request)
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
    ui = ui_state(request)
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
