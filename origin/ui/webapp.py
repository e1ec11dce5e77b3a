"""The web UI's wiring into the origin's application, mounted at ``/ui/``.

:func:`install` (called by :func:`origin.app.create_app` once ``app[ACCESS]`` is set) builds the
session signer (key from ``http.secret`` or under the root, see :mod:`origin.ui.session`), the
Jinja environment (templates and CSS shipped in this package; autoescaping on, undefined names
are errors), registers the routes of :mod:`origin.ui.routes`, each wrapped so that:

* the viewer (:class:`origin.ui.viewer.Viewer`) is known before the page is built;
* failures render as HTML pages with the right status (400, 403, 404; 500 with nothing of the
  exception in the body, which is logged), never the registry's JSON;

and adds one response hook that, on every answer under ``/ui`` (pages, redirects, the CSS),
sets ``Content-Security-Policy`` (own styles and images only, no scripts, forms post to this
origin only, no framing), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
same-origin``, ``X-Frame-Options: DENY``, and ``Cache-Control: no-store`` except on the CSS.

The routes live on the origin's own application (not a sub-application: the origin's hooks
read ``request.app``). The ``/v2/`` access middleware passes ``/ui`` through; the UI asks the
same authorizer itself. The UI changes nothing in the registry (sign-in and sign-out only set
cookies and write audit lines).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web

from origin import state
from origin.access import ACCESS
from origin.ui import keys, routes
from origin.ui.format import FILTERS, GLOBALS
from origin.ui.inventory import InventorySource
from origin.ui.inventorycache import DEFAULT_TTL, InventoryCache
from origin.ui.render import PageError, render
from origin.ui.session import SessionSigner, load_key
from origin.ui.trust import TrustSource
from origin.ui.viewer import UiAccess

__all__ = ["CSP", "install"]

log = logging.getLogger("quayside.origin.ui")
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
_ERROR_TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 500: "Server error"}


def install(
    app: web.Application,
    config: Any,
    *,
    trust: TrustSource | None = None,
    inventory: InventorySource | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Add the UI to ``app`` (see the module docstring). ``config`` is the origin's;
    ``trust`` and ``inventory`` override what the application keys
    :data:`~origin.ui.keys.TRUST_SOURCE` and :data:`~origin.ui.keys.INVENTORY_SOURCE` give."""
    key = load_key(config.storage.rootdirectory, config.http.secret)
    ops = app.get(state.OPS)
    ops_config = getattr(config, "ops", None)
    cache = InventoryCache(
        app[state.LAYOUT],
        ttl=ops_config.inventory.ui_refresh if ops_config is not None else DEFAULT_TTL,
        busy=ops.maintenance.locked if ops is not None else (lambda: False),
    )
    app[state.REPOS].listeners.append(cache.invalidate)  # this process's writes
    app[keys.UI] = keys.UiState(
        access=UiAccess(app[ACCESS], SessionSigner(key, clock=clock), clock=clock),
        readonly=bool(app[state.READONLY]),
        tls=bool(config.http.tls.enabled),
        cache=cache,
        external_host=urlsplit(config.http.host or "").netloc.lower(),
        trust_override=trust,
        inventory_override=inventory,
    )
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("origin.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    env.globals.update(GLOBALS)
    routes.add_routes(app, _page)
    app.on_response_prepare.append(_ui_headers)


def _page(handler: routes.Handler) -> routes.Handler:
    """Wrap a page handler: viewer first, HTML error pages (see the module docstring)."""

    @functools.wraps(handler)
    async def page(request: web.Request) -> web.StreamResponse:
        ui: keys.UiState = request.app[keys.UI]
        request[keys.VIEWER] = ui.access.viewer(request)
        try:
            return await handler(request)
        except PageError as exc:
            return _error_page(request, exc.status, exc.message)
        except web.HTTPException:
            raise  # redirects
        except Exception:
            log.exception("UI page failed", extra={"path": request.path})
            return _error_page(request, 500, "Something went wrong on our side.")

    return page


async def _ui_headers(request: web.Request, response: web.StreamResponse) -> None:
    path = request.path
    if path != "/ui" and not path.startswith("/ui/"):
        return
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    if not path.startswith("/ui/static/"):
        response.headers["Cache-Control"] = "no-store"


def _error_page(request: web.Request, status: int, message: str) -> web.StreamResponse:
    title = _ERROR_TITLES.get(status, "Error")
    return render(
        request, "error.html", {"title": title, "message": message, "status": status}, status
    )
