"""Signing in and out of the web UI (the forms of ``/ui/login`` and ``/ui/logout``).

Sign-in: the form's CSRF token must be the one its signed ``login`` cookie binds, and a
request with an ``Origin`` header must come from this site (the request's host, the
``X-Forwarded-Host`` a trusted proxy sends, or ``http.host``); otherwise 403 and the password
is not looked at. Wrong credentials show the form again with the error (200: a 401 would need
a ``WWW-Authenticate`` challenge, and a Basic one would make browsers open their own dialog);
throttled attempts answer 429 with ``Retry-After``. Success sets the session cookie
(``HttpOnly``, ``SameSite=Strict``, ``Path=/ui/``, ``Secure`` when the origin serves TLS or a
trusted proxy says ``X-Forwarded-Proto: https``) and redirects (303) to ``next`` when it is a
path inside the UI, else to ``/ui/``. Sign-out needs the session's CSRF token, revokes the
session and clears the cookie.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from origin.ui import keys
from origin.ui.render import PageError, render, see_other, ui_state
from origin.ui.session import LOGIN_COOKIE, SESSION_COOKIE, csrf_matches
from origin.ui.viewer import Viewer
from regcore.auth.authenticator import LoginFailed, LoginThrottled
from regcore.auth.principal import in_networks

__all__ = ["login_page", "login_submit", "logout", "safe_next"]


def safe_next(value: str | None) -> str:
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
    ui = ui_state(request)
    if request.secure or ui.tls:
        return True
    trusted = ui.access.access.trusted
    proto = request.headers.get("X-Forwarded-Proto", "").lower()
    return bool(trusted) and in_networks(request.remote or "", trusted) and proto == "https"


def _login_form(
    request: web.Request, status: int = 200, error: str = "", login: str = "", **headers: str
) -> web.StreamResponse:
    ui = ui_state(request)
    token, cookie = ui.access.signer.new_login_token()
    resp = render(
        request,
        "login.html",
        {
            "title": "Sign in",
            "login_csrf": token,
            "error": error,
            "login": login,
            "next": safe_next(request.query.get("next") or request.get(keys.NEXT)),
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
    """Whether the request carries an ``Origin`` that is not this site."""
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    if origin == "null":
        return True
    ui = ui_state(request)
    ours = {request.host.lower()}
    trusted = ui.access.access.trusted
    if trusted and in_networks(request.remote or "", trusted):
        ours.update(h.strip().lower() for h in request.headers.getall("X-Forwarded-Host", []))
    if ui.external_host:
        ours.add(ui.external_host)
    return urlsplit(origin).netloc.lower() not in ours


async def login_submit(request: web.Request) -> web.StreamResponse:
    ui = ui_state(request)
    viewer: Viewer = request[keys.VIEWER]
    if not viewer.auth_enabled:
        raise web.HTTPSeeOther("/ui/")
    form = await request.post()
    login = str(form.get("username", ""))[:256]
    password = str(form.get("password", ""))
    request[keys.NEXT] = safe_next(str(form.get("next", "")))
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
    ui = ui_state(request)
    viewer: Viewer = request[keys.VIEWER]
    form = await request.post()
    if viewer.session is not None:
        if not csrf_matches(viewer.session, str(form.get("csrf", ""))) or _foreign_origin(request):
            raise PageError(403, "The sign-out form did not come from this site.")
        ui.access.sign_out(viewer)
    resp = see_other("/ui/login" if viewer.auth_enabled else "/ui/")
    resp.del_cookie(SESSION_COOKIE, path="/ui/")
    return resp
