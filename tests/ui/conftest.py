"""Fixtures of the web UI tests: the real origin application on a loopback port.

``ui_origin(auth=True, content=True, trust=None, overrides=None)`` starts ``create_app`` with an
htpasswd file of :data:`tests.ui.content.USERS` (bcrypt, low cost) and
:data:`tests.ui.content.RULES` (or with authentication off), publishes
:func:`tests.ui.content.publish` through the API, and returns a :class:`UiOrigin`.
:meth:`UiOrigin.browser` gives a :class:`Visitor`: its own cookie jar, like one browser.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from origin.access import ACCESS
from origin.app import create_app
from origin.ui import TRUST_SOURCE
from regcore.auth.htpasswd import hash_password, write_entries
from regcore.config import load_origin_config
from tests.edge.conftest import make_edge  # noqa: F401  (the edge status page tests)
from tests.ui.content import RULES, USERS, Published, basic, publish

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


class Visitor:
    """One browser's worth of HTTP: a session with its own cookie jar."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str, **kw: Any) -> tuple[aiohttp.ClientResponse, str]:
        kw.setdefault("allow_redirects", False)
        async with self.session.get(self.base_url + path, **kw) as resp:
            return resp, await resp.text()

    async def post(self, path: str, data: Any, **kw: Any) -> tuple[aiohttp.ClientResponse, str]:
        kw.setdefault("allow_redirects", False)
        async with self.session.post(self.base_url + path, data=data, **kw) as resp:
            return resp, await resp.text()

    async def login_token(self) -> str:
        resp, body = await self.get("/ui/login")
        assert resp.status == 200, body
        match = CSRF_RE.search(body)
        assert match, body
        return match.group(1)

    async def sign_in(
        self, user: str, password: str | None = None, *, next_path: str = "/ui/"
    ) -> tuple[aiohttp.ClientResponse, str]:
        token = await self.login_token()
        form = {
            "username": user,
            "password": password if password is not None else USERS.get(user, ""),
            "csrf": token,
            "next": next_path,
        }
        return await self.post("/ui/login", form)

    def cookie(self, name: str) -> str | None:
        for c in self.session.cookie_jar:
            if c.key == name:
                return c.value
        return None

    async def close(self) -> None:
        await self.session.close()


@dataclass
class UiOrigin:
    base_url: str
    app: Any
    root: Path
    published: Published | None
    visitors: list[Visitor] = field(default_factory=list)

    def browser(self) -> Visitor:
        v = Visitor(self.base_url)
        self.visitors.append(v)
        return v

    @property
    def audit_path(self) -> Path:
        return Path(self.app[ACCESS].audit.path)


UiOriginFactory = Callable[..., Awaitable[UiOrigin]]


def write_users(path: Path, users: dict[str, str]) -> Path:
    write_entries(path, {u: hash_password(p, cost=4) for u, p in users.items()})
    return path


@pytest.fixture
async def ui_origin(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[UiOriginFactory]:
    made: list[UiOrigin] = []
    counter = iter(range(100))

    async def make(
        *,
        auth: bool = True,
        content: bool = True,
        trust: Any = None,
        overrides: dict[str, Any] | None = None,
        root: Path | None = None,
    ) -> UiOrigin:
        n = next(counter)
        root = root or tmp_path / f"root-{n}"
        settings: dict[str, Any] = {"storage.filesystem.rootdirectory": str(root)}
        if auth:
            users = write_users(tmp_path / f"htpasswd-{n}", USERS)
            settings["auth"] = {"htpasswd": {"realm": "qs-ui", "path": str(users)}}
            settings["quayside.auth"] = {"access": RULES}
        settings.update(overrides or {})
        config = load_origin_config(None, {}, settings)
        app = create_app(config)
        if trust is not None:
            app[TRUST_SOURCE] = trust
        server = await aiohttp_server(app)
        base = f"http://127.0.0.1:{server.port}"
        published = None
        if content:
            published = await (
                publish(base, basic("alice"), basic("erin")) if auth else publish(base, {})
            )
        origin = UiOrigin(base, app, root, published)
        made.append(origin)
        return origin

    yield make
    for origin in made:
        for v in origin.visitors:
            await v.close()
