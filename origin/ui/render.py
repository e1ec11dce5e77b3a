"""Rendering helpers shared by the UI's handlers: pages, error pages, redirects."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from origin.ui import keys
from origin.ui.viewer import Viewer

__all__ = ["PageError", "render", "see_other", "ui_state"]


class PageError(Exception):
    """Render the error page with ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def see_other(location: str) -> web.Response:
    """A 303 to a local ``location`` (returned, so cookies can be set on it)."""
    return web.Response(status=303, headers={"Location": location})


def ui_state(request: web.Request) -> keys.UiState:
    return request.app[keys.UI]


def render(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> Any:
    ui = ui_state(request)
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
