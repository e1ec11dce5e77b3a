"""Run an aiohttp application as a server process: the part ``origin`` and ``edge`` share.

- :func:`run` runs a coroutine on uvloop (the stdlib loop where uvloop is missing).
- :func:`bind` binds the listening socket *before* the application is built, so a server
  started with port 0 knows the URL it is reachable at (the edge advertises it to peers).
  :func:`bind_listeners` binds a server's main listener and its optional second (metrics/debug)
  one, reporting a failure as ``quayside NAME: cannot listen on ...`` on stderr.
- :func:`serve_app` (with an optional :class:`DebugSite`, a second listener) installs SIGTERM/SIGINT handlers, starts the site, prints one JSON line
  ``{"event": "listening", "url": ...}`` to stdout (launchers read it to learn the port), waits
  for a signal and shuts down gracefully (requests in flight get ``shutdown_timeout``; the
  app's cleanup contexts drain background work). Signal handlers are installed before the
  line is printed, so a launcher may signal as soon as it has read it. With an
  ``ssl_context`` the site is a :class:`regcore.tlssniff.TLSSniffSite`: a plain-HTTP client
  on the TLS port gets Go's ``400 Client sent an HTTP request to an HTTPS server.``; without
  one it is aiohttp's ``web.SockSite``, nothing in between.
- :class:`ServerLogger` is the logger aiohttp's connection handler reports with. Client faults
  it would log at error level with a full traceback become one line without one: a malformed
  request (bad request line or header: aiohttp answers 400) one info line with the parser's
  reason; a client that went away, a handler deadline or a malformed body (already reported
  by :func:`regcore.http.standard_middleware` with the path) a debug line. Any other exception
  keeps its traceback at error level: those are our bugs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from regcore.http import first_line
from regcore.logging import JSONAccessLogger
from regcore.tlssniff import TLSSniffSite

log = logging.getLogger("quayside.serving")

# pending connections the kernel queues before accept (capped by net.core.somaxconn): a fleet's
# nodes reconnecting at once after a restart must not find the queue full (aiohttp's sites
# default to 128 and re-listen with their own value)
BACKLOG = 1024


class ServerLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's ``aiohttp.server`` logger with client faults demoted (see the module
    docstring). Pass it as ``logger=`` to ``web.AppRunner``."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__(logger or logging.getLogger("aiohttp.server"), {})

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = _exception(kwargs.get("exc_info"))
        if isinstance(exc, ConnectionError | TimeoutError | RequestPayloadError):
            # already reported with its path by standard_middleware (or a body nobody read)
            self.logger.debug("connection ended early", extra={"error": type(exc).__name__})
            return
        if isinstance(exc, HttpProcessingError):
            remote = args[0] if args else None
            self.logger.log(
                # aiohttp reports non-HTTP bytes on a fresh connection (scanners, TLS to a
                # plain port) at debug; keep that, everything else malformed is one info line
                logging.DEBUG if level <= logging.DEBUG else logging.INFO,
                "malformed request refused",
                extra={
                    "remote": str(remote),
                    "error": type(exc).__name__,
                    "reason": first_line(exc),
                },
            )
            return
        super().log(level, msg, *args, **kwargs)


def _exception(exc_info: object) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if exc_info is True:
        return sys.exc_info()[1]
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info[1] if isinstance(exc_info[1], BaseException) else None
    return None


@dataclass(frozen=True)
class DebugSite:
    """A second listener for :func:`serve_app`: its application, bound socket and URL."""

    app: web.Application
    sock: socket.socket
    url: str


def run(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.Runner()
    with runner:
        return runner.run(main)


def bind(host: str, port: int, *, tls: bool = False) -> tuple[socket.socket, str]:
    """Bind and listen; returns the socket and the URL it is reachable at. Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(bound_host, bound_host)
    if ":" in shown:
        shown = f"[{shown}]"
    return sock, f"{'https' if tls else 'http'}://{shown}:{bound_port}"


@dataclass(frozen=True)
class Listen:
    """An address for :func:`bind_listeners`: ``what`` names it in the error message (the
    configured address, with the key in front for a second listener), ``host``/``port`` are
    bound."""

    what: str
    host: str
    port: int


@dataclass(frozen=True)
class Listeners:
    """What :func:`bind_listeners` bound: the main socket, its URL and TLS context, and the
    second (plain HTTP) socket and URL when one was asked for."""

    sock: socket.socket
    url: str
    ssl_context: ssl.SSLContext | None
    second: tuple[socket.socket, str] | None

    def debug_site(self, app: Callable[[], web.Application]) -> DebugSite | None:
        """A :class:`DebugSite` serving ``app()`` on the second socket, or None without one
        (``app`` is then not called)."""
        if self.second is None:
            return None
        return DebugSite(app(), *self.second)


def bind_listeners(
    name: str,
    main: Listen,
    *,
    ssl_context: Callable[[], ssl.SSLContext | None] = lambda: None,
    second: Listen | None = None,
) -> Listeners | None:
    """Build the main listener's TLS context (``ssl_context()``; None: plain HTTP), bind it,
    then bind ``second`` (plain HTTP) if given. On failure print ``quayside NAME: cannot
    listen on WHAT: REASON`` to stderr, close what was bound and return None (the server
    then exits with status 1)."""
    try:
        ctx = ssl_context()
        sock, url = bind(main.host, main.port, tls=ctx is not None)
    except (OSError, ssl.SSLError) as exc:
        _cannot_listen(name, main, exc)
        return None
    bound = None
    if second is not None:
        try:
            bound = bind(second.host, second.port)
        except OSError as exc:
            sock.close()
            _cannot_listen(name, second, exc)
            return None
    return Listeners(sock, url, ctx, bound)


def _cannot_listen(name: str, where: Listen, exc: OSError) -> None:
    print(
        f"quayside {name}: cannot listen on {where.what}: {exc.strerror or exc}",
        file=sys.stderr,
    )


def freeze_startup_heap() -> int:
    """Move every object alive now (modules, the application) out of the garbage
    collector's sight (``gc.freeze``), after one full collection. Returns how many objects
    are frozen.

    A server's heap is mostly what it imported and built at start-up and keeps until it
    exits; a full collection would walk all of it again and again while it serves. Measured
    on the edge: a full collection in the middle of a cold 200 MiB fill took more CPU than
    hashing the blob. Frozen objects are never collected (they live as long as the process
    anyway); objects made afterwards are collected as usual.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def serve_app(
    app: web.Application,
    sock: socket.socket,
    url: str,
    *,
    name: str,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = 5.0,
    access_log: bool = True,
    log_extra: Mapping[str, Any] | None = None,
    debug: DebugSite | None = None,
) -> int:
    """Serve ``app`` on the bound ``sock`` until SIGTERM/SIGINT. Returns the exit status:
    0 after a clean stop, 1 when the application failed to start.

    ``debug``: a second application on its own bound socket (the metrics-only debug
    listener), started before the listening line (which then also carries ``debug_url``) and
    stopped after the main one; no access log."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("quayside.access") if access_log else None,
        access_log_class=JSONAccessLogger,
        shutdown_timeout=shutdown_timeout,
        handle_signals=False,
        logger=ServerLogger(),
    )
    debug_runner = None
    if debug is not None:
        debug_runner = web.AppRunner(debug.app, access_log=None, handle_signals=False)
        await debug_runner.setup()
        await web.SockSite(debug_runner, debug.sock).start()
    try:
        await runner.setup()
    except Exception as exc:
        sock.close()
        log.exception("%s failed to start", name)
        print(f"quayside {name}: cannot start: {exc}", file=sys.stderr)
        if debug_runner is not None:
            await debug_runner.cleanup()
        return 1
    site: web.BaseSite  # both listen again on the socket: they must be given the backlog
    if ssl_context is None:
        site = web.SockSite(runner, sock, backlog=BACKLOG)
    else:  # answers plain HTTP with a 400 instead of a dropped connection
        site = TLSSniffSite(runner, sock, ssl_context=ssl_context, backlog=BACKLOG)
    await site.start()
    freeze_startup_heap()
    line: dict[str, str] = {"event": "listening", "url": url}
    if debug is not None:
        line["debug_url"] = debug.url
    print(json.dumps(line), flush=True)
    extra = {k: v for k, v in line.items() if k != "event"}
    log.info("listening", extra={"server": name, **extra, **dict(log_extra or {})})
    try:
        await stop.wait()
    finally:
        log.info("shutting down", extra={"server": name})
        await runner.cleanup()
        if debug_runner is not None:
            await debug_runner.cleanup()
    return 0
