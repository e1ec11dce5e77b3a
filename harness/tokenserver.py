"""A Docker token service for tests and bench: the realm a token-protected registry names.

``TokenServer`` answers ``GET /token?service=...&scope=...`` with a JWT from
:class:`regcore.auth.tokens.TokenIssuer` that docker-registry 2.8 accepts, after checking
HTTP Basic credentials against ``users``. Access is granted per user by glob patterns::

    server = TokenServer(
        users={"alice": "secret"},
        grants={"alice": {"team/*": ["pull", "push"]}, "": {"public/*": ["pull"]}},
    )   # "" = anonymous; "*" in actions grants every requested action

    async with server:                       # in-process, 127.0.0.1:<free port>
        with DockerRegistry(auth_token=server.token_auth()) as registry: ...

Guarantees:
- the trust bundle (``bundle_path``) is written by the constructor, so the registry can be
  configured before the server starts; :meth:`close` removes a workdir it created;
- every request is recorded in :attr:`requests` (path, query pairs, whether an
  ``Authorization`` header was present, the user it authenticated, scopes, status) before
  the answer is sent, so tests can assert on it right after their call returns;
- wrong credentials → 401; unknown users with no password → anonymous grants;
  :meth:`fail_next` makes the next N requests answer a given status (fault tests).

Run it as a subprocess with ``python -m harness.tokenserver --port N --workdir DIR
--user alice:secret --grant alice=team/*:pull,push`` (requests appended as JSON lines to
``DIR/requests.jsonl``; the bundle is ``DIR/bundle.pem``; ``DIR/token_auth.json`` holds the
registry's ``auth.token`` section).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import fnmatch
import json
import shutil
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from aiohttp import web

from harness.registry import TokenAuth
from regcore.auth.tokens import Access, KeyHeader, TokenIssuer, parse_scopes

TokenField = Literal["token", "access_token", "both"]


@dataclass(frozen=True)
class TokenRequest:
    """One request the token service received."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    authorization: bool
    user: str | None
    scopes: tuple[str, ...]
    service: str | None
    status: int
    granted: tuple[str, ...] = ()


class TokenServer:
    """An in-process token service; see the module docstring."""

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        grants: Mapping[str, Mapping[str, Iterable[str]]] | None = None,
        issuer: TokenIssuer | None = None,
        issuer_name: str = "quayside-test-issuer",
        service: str = "quayside-test-registry",
        algorithm: str = "ES256",
        header: KeyHeader = "x5c",
        ttl: int = 300,
        expires_in: int | None = None,
        token_field: TokenField = "both",
        host: str = "127.0.0.1",
        port: int = 0,
        workdir: str | Path | None = None,
        record_path: str | Path | None = None,
    ) -> None:
        self.users = dict(users or {})
        self.grants = {u: {p: tuple(a) for p, a in g.items()} for u, g in (grants or {}).items()}
        self.issuer = issuer or TokenIssuer.generate(
            issuer_name, service, algorithm=algorithm, header=header
        )
        self.ttl = ttl
        self.expires_in = expires_in
        self.token_field = token_field
        self.host = host
        self.port = port
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="qs-token-"))
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bundle_path = self.workdir / "bundle.pem"
        self.bundle_path.write_bytes(self.issuer.bundle_pem())
        self.record_path = Path(record_path) if record_path is not None else None
        self.requests: list[TokenRequest] = []
        self._failures: list[int] = []
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # -- addresses -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def realm(self) -> str:
        return self.url + "/token"

    def token_auth(self) -> TokenAuth:
        """The registry's ``auth.token`` section for :class:`harness.registry.DockerRegistry`.

        Valid only after :meth:`start` when ``port`` was 0 (the realm needs the port).
        """
        return TokenAuth(
            realm=self.realm,
            service=self.issuer.service,
            issuer=self.issuer.issuer,
            rootcertbundle=str(self.bundle_path),
        )

    # -- control -------------------------------------------------------------------------

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` (recorded like any other)."""
        self._failures.extend([status] * times)

    def count(self, *, authorization: bool | None = None, scope: str | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if (authorization is None or r.authorization == authorization)
            and (scope is None or scope in r.scopes)
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> TokenServer:
        app = web.Application()
        app.router.add_get("/token", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close(self) -> None:
        """Stop serving and remove the workdir this object created."""
        await self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> TokenServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def start_in_thread(self, timeout: float = 10.0) -> TokenServer:
        """Serve from a private event loop in a daemon thread (for synchronous fixtures)."""
        ready = threading.Event()
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread_loop = loop
        self._thread = threading.Thread(target=run, name="token-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("token server thread did not start")
        return self

    def stop_thread(self) -> None:
        """Stop a server started with :meth:`start_in_thread` and remove its own workdir."""
        if self._thread_loop is not None and self._thread is not None:
            self._thread_loop.call_soon_threadsafe(self._thread_loop.stop)
            self._thread.join(10)
            self._thread = self._thread_loop = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the endpoint --------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization")
        scopes = tuple(request.query.getall("scope", []))
        service = request.query.get("service")
        user, ok = self._authenticate(header)

        def record(status: int, granted: tuple[str, ...] = ()) -> None:
            entry = TokenRequest(
                request.method,
                request.path,
                tuple(request.query.items()),
                header is not None,
                user,
                scopes,
                service,
                status,
                granted,
            )
            self.requests.append(entry)
            if self.record_path is not None:
                with self.record_path.open("a") as fh:
                    fh.write(json.dumps(asdict(entry)) + "\n")

        if self._failures:
            status = self._failures.pop(0)
            record(status)
            return web.json_response({"details": "injected failure"}, status=status)
        if not ok:
            record(401)
            return web.json_response(
                {"details": "incorrect username or password"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="quayside-test-token"'},
            )
        access = self._grant(user or "", parse_scopes(scopes))
        granted = tuple(str(a) for a in access)
        record(200, granted)
        issued = self.issuer.issue(user or "", access, ttl=self.ttl)
        body = issued.to_response()
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if self.token_field == "token":
            body.pop("access_token")
        elif self.token_field == "access_token":
            body.pop("token")
        return web.json_response(body)

    def _authenticate(self, header: str | None) -> tuple[str | None, bool]:
        if header is None:
            return None, True
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            user, _, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return None, False
        return user, self.users.get(user) == password and user in self.users

    def _grant(self, user: str, wanted: list[Access]) -> list[Access]:
        rules = self.grants.get(user, {})
        out: list[Access] = []
        for acc in wanted:
            subject = acc.name if acc.type == "repository" else f"{acc.type}:{acc.name}"
            allowed: set[str] = set()
            for pattern, actions in rules.items():
                if fnmatch.fnmatchcase(subject, pattern):
                    allowed.update(actions)
            actions = tuple(a for a in acc.actions if a in allowed or "*" in allowed)
            if actions:
                out.append(Access(acc.type, acc.name, actions))
        return out


def _parse_grant(text: str) -> tuple[str, str, tuple[str, ...]]:
    """``user=pattern:actions`` (user empty for anonymous)."""
    user, _, rest = text.partition("=")
    pattern, _, actions = rest.rpartition(":")
    return user, pattern, tuple(a for a in actions.split(",") if a)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m harness.tokenserver", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--user", action="append", default=[], help="name:password")
    parser.add_argument("--grant", action="append", default=[], help="user=pattern:actions")
    parser.add_argument("--service", default="quayside-test-registry")
    parser.add_argument("--issuer", default="quayside-test-issuer")
    parser.add_argument("--algorithm", default="ES256")
    parser.add_argument("--header", choices=["x5c", "kid"], default="x5c")
    parser.add_argument("--ttl", type=int, default=300)
    args = parser.parse_args(argv)
    grants: dict[str, dict[str, tuple[str, ...]]] = {}
    for text in args.grant:
        user, pattern, actions = _parse_grant(text)
        grants.setdefault(user, {})[pattern] = actions
    workdir = Path(args.workdir)
    server = TokenServer(
        users=dict(u.split(":", 1) for u in args.user),
        grants=grants,
        issuer_name=args.issuer,
        service=args.service,
        algorithm=args.algorithm,
        header=args.header,
        ttl=args.ttl,
        host=args.host,
        port=args.port,
        workdir=workdir,
        record_path=workdir / "requests.jsonl",
    )
    (workdir / "token_auth.json").write_text(json.dumps(server.token_auth().to_dict()))

    async def serve() -> None:
        await server.start()
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
