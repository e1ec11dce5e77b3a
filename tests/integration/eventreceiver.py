"""A webhook receiver for the notification tests: a small aiohttp server on its own thread.

It records every POSTed envelope (endpoint, headers, body) and can be stopped and started again on
the same port (an outage: connections refused meanwhile). ``fail_next(n)`` answers the next
``n`` posts with 503 (a receiver that is up but failing). With ``ssl_context`` it serves
HTTPS (a receiver behind a private CA).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from typing import Any

from aiohttp import web


class EventReceiver:
    def __init__(self, port: int = 0, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.ssl_context = ssl_context
        self.posts: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._failures = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None

    def url(self, endpoint: str) -> str:
        """The URL an endpoint posts to (``endpoint`` tells envelopes apart)."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/events?endpoint={endpoint}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            if self._failures > 0:
                self._failures -= 1
                return web.Response(status=503)
            endpoint = request.query.get("endpoint", "")
            self.posts.append((endpoint, dict(request.headers), json.loads(body)))
        return web.Response(status=200)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/events", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            "127.0.0.1",
            self.port,
            reuse_address=True,
            ssl_context=self.ssl_context,
        )
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> EventReceiver:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def fail_next(self, n: int) -> None:
        with self._lock:
            self._failures = n

    def events(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """Events received (for one endpoint, or all), in arrival order."""
        with self._lock:
            return [
                e
                for ep, _, env in self.posts
                if endpoint is None or ep == endpoint
                for e in env["events"]
            ]

    def wait_for(
        self, count: int, endpoint: str | None = None, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Block until at least ``count`` events arrived (for ``endpoint``); returns them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.events(endpoint)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"only {len(self.events(endpoint))} of {count} events arrived")
