"""In-test HTTP servers that play parts a real process cannot: a CDN behind a redirect, a
registry that redirects or misbehaves on purpose, a token realm with a twist.

``FaultServer`` serves an aiohttp app from a private event loop in a daemon thread, so it
answers while the test blocks in synchronous calls (skopeo, urllib, a child edge process
waiting on it). Every request is recorded *before* its handler runs::

    cdn = FaultServer(host="127.0.0.2")          # another host than the registry's 127.0.0.1
    cdn.route("GET", "/{tail:.*}", cdn.static_handler(registry.root))
    with cdn:
        ...
        assert cdn.count("GET", "/blobs/") == 1
        assert not cdn.with_header("Authorization")

Guarantees:
- :meth:`start` returns once the socket listens (port 0 picks a free one; :attr:`url` then
  has the real port) and raises :class:`TimeoutError` if the thread does not come up;
- :attr:`requests` is append-only and safe to read from the test thread at any time;
- :meth:`close` stops the loop and joins the thread (idempotent); handlers still running are
  cancelled with the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class SeenRequest:
    """One request a :class:`FaultServer` received (headers copied, names as sent)."""

    method: str
    path: str
    query_string: str
    headers: Mapping[str, str]

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``None``."""
        lower = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lower:
                return value
        return None


class FaultServer:
    """An aiohttp server in a daemon thread with recorded requests; see the module docstring."""

    def __init__(
        self,
        routes: Mapping[tuple[str, str], Handler] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "fault-server",
    ) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.requests: list[SeenRequest] = []
        self._routes: list[tuple[str, str, Handler]] = [
            (m, p, h) for (m, p), h in (routes or {}).items()
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- setup -----------------------------------------------------------------------------

    def route(self, method: str, path: str, handler: Handler) -> FaultServer:
        """Add a route (aiohttp path syntax, ``*`` for any method). Only before :meth:`start`."""
        if self._thread is not None:
            raise RuntimeError("routes must be added before start()")
        self._routes.append((method, path, handler))
        return self

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (the real port once started)."""
        return f"http://{self.host}:{self.port}"

    # -- observation -----------------------------------------------------------------------

    def count(self, method: str | None = None, path_substring: str = "") -> int:
        """Requests with ``method`` (any when ``None``) whose path contains ``path_substring``."""
        return sum(
            1
            for r in list(self.requests)
            if (method is None or r.method == method) and path_substring in r.path
        )

    def with_header(self, name: str) -> list[SeenRequest]:
        """Requests that carried header ``name`` (any value)."""
        return [r for r in list(self.requests) if r.header(name) is not None]

    # -- lifecycle -------------------------------------------------------------------------

    def _app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.requests.append(
                SeenRequest(
                    request.method, request.path, request.query_string, dict(request.headers)
                )
            )
            return await handler(request)

        app = web.Application(middlewares=[record])
        for method, path, handler in self._routes:
            app.router.add_route(method, path, handler)
        return app

    async def _start(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    def start(self, timeout: float = 10.0) -> FaultServer:
        """Serve from a daemon thread; return once listening. Raises TimeoutError."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"{self.name} did not start within {timeout:.1f}s")
        if failure:
            self._thread.join(1)
            self._thread = self._loop = None
            raise failure[0]
        return self

    def close(self) -> None:
        """Stop serving and join the thread. Idempotent."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = self._loop = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- ready-made handlers -----------------------------------------------------------------

    @staticmethod
    def static_handler(root: str | Path, *, tail: str = "tail") -> Handler:
        """Serve files under ``root`` at the path in match group ``tail`` (GET/HEAD, Range via
        FileResponse); 404 outside ``root`` or for a missing file. Query strings (signatures
        of signed URLs) are ignored."""
        base = Path(root).resolve()

        async def handler(request: web.Request) -> web.StreamResponse:
            target = (base / request.match_info.get(tail, "").lstrip("/")).resolve()
            if not target.is_relative_to(base) or not target.is_file():
                return web.Response(status=404, text="not found")
            return web.FileResponse(target, headers={"Content-Type": "application/octet-stream"})

        return handler
