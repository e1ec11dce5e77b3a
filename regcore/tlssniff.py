"""A TLS listener that tells a plain-HTTP client what it did wrong instead of dropping it.

:class:`TLSSniffSite` is an aiohttp site for a bound, listening socket and an
``ssl.SSLContext``. It accepts connections itself and looks at the first byte each client
sends (``recv(1, MSG_PEEK)``: nothing is consumed) before any TLS is spoken:

- ``0x16`` (a TLS handshake record, i.e. a ClientHello): the socket is handed to the loop with
  ``loop.connect_accepted_socket(runner.server, sock, ssl=...)`` and aiohttp serves it exactly
  as a ``web.SockSite`` with the same context would (same transport: ``peername``,
  ``ssl_object``, peer certificates; same handshake timeout, :data:`HANDSHAKE_TIMEOUT`).
- the first letter of an HTTP method (``C D G H O P T``: CONNECT, DELETE, GET, HEAD, OPTIONS,
  PATCH, POST, PUT, TRACE): the client is answered what Go's net/http (and so registry:2)
  answers, ``HTTP/1.0 400 Bad Request`` with the body ``Client sent an HTTP request to an HTTPS
  server.`` (:data:`PLAIN_HTTP_ANSWER`, ``Connection: close``), and the connection is closed:
  the write side at once, the socket after the client closed its side or
  :data:`LINGER_TIMEOUT` (what the client sends meanwhile is read and discarded, so the close
  does not turn into a reset that could destroy the answer before the client read it).
- anything else: closed at once, nothing written.
- nothing within ``first_byte_timeout`` (:data:`FIRST_BYTE_TIMEOUT`), or the client closed:
  closed. A silent client holds a descriptor for that long at most.

Until the first byte arrives a connection costs a descriptor, a reader callback and a timer:
no task. A TLS connection is then one task while its handshake runs (bounded by
:data:`HANDSHAKE_TIMEOUT`); a failed handshake is logged at debug, as the loop's own server
does. Works on asyncio's default loop and on uvloop.

Shutdown (:meth:`TLSSniffSite.stop`, called by ``runner.cleanup()``): the accept loop is
cancelled and awaited, the listening socket closed, connections still waiting for a first
byte or lingering closed, handshakes in progress cancelled (their sockets closed) and awaited;
connections already handed to aiohttp are left to the runner's graceful shutdown.
Accept errors never stop the listener: running out of descriptors or memory pauses accepting
for :data:`ACCEPT_RETRY_DELAY` (as asyncio's server does), a connection aborted before it was
accepted is skipped.

Plain-HTTP listeners do not use this: ``regcore.serving.serve_app`` keeps ``web.SockSite`` for
them, so they pay nothing per connection.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from typing import Final

from aiohttp import web

from regcore.background import cancel_and_wait

__all__ = [
    "ACCEPT_RETRY_DELAY",
    "FIRST_BYTE_TIMEOUT",
    "HANDSHAKE_TIMEOUT",
    "LINGER_TIMEOUT",
    "PLAIN_HTTP_ANSWER",
    "TLSSniffSite",
]

log = logging.getLogger("quayside.tlssniff")

FIRST_BYTE_TIMEOUT: Final = 5.0
"""Seconds a new connection may stay silent before it is closed."""
HANDSHAKE_TIMEOUT: Final = 60.0
"""Seconds a TLS handshake may take (asyncio's and uvloop's default for ``create_server``)."""
LINGER_TIMEOUT: Final = 2.0
"""Seconds a refused plain-HTTP connection is kept half-closed for the client to read."""
ACCEPT_RETRY_DELAY: Final = 1.0
"""Pause after accept() failed for lack of descriptors or memory."""

_TLS_HANDSHAKE_RECORD: Final = 0x16
_HTTP_METHOD_INITIALS: Final = frozenset(b"CDGHOPT")
_GO_MESSAGE: Final = b"Client sent an HTTP request to an HTTPS server.\n"
PLAIN_HTTP_ANSWER: Final = (
    b"HTTP/1.0 400 Bad Request\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_GO_MESSAGE)).encode() + b"\r\n"
    b"\r\n" + _GO_MESSAGE
)
"""The whole answer to plain HTTP on a TLS port (status line and body as Go's net/http)."""

_ACCEPT_PAUSE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_SKIP_ERRNOS: Final = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
_YIELD_EVERY: Final = 64  # accepts in a row before letting other callbacks run
_DRAIN_CHUNK: Final = 64 * 1024


class _Waiting:
    """An accepted connection this site still owns: waiting for its first byte, or refused
    and lingering. Exactly one reader callback and one timer are registered for it."""

    __slots__ = ("fd", "remote", "sock", "timer")

    def __init__(self, sock: socket.socket, remote: object) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.remote = remote
        self.timer: asyncio.TimerHandle | None = None


class TLSSniffSite(web.BaseSite):
    """Serve ``runner``'s application over TLS on the listening ``sock``, answering plain
    HTTP with a 400 (see the module docstring). ``sock`` must be bound and non-blocking;
    :meth:`start` listens on it with ``backlog`` (as ``web.SockSite`` does) and :meth:`stop`
    closes it."""

    __slots__ = (
        "_accepting",
        "_first_byte_timeout",
        "_handshake_timeout",
        "_handshakes",
        "_linger_timeout",
        "_loop",
        "_name",
        "_sock",
        "_waiting",
    )

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        *,
        ssl_context: ssl.SSLContext,
        backlog: int = 128,
        first_byte_timeout: float = FIRST_BYTE_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        linger_timeout: float = LINGER_TIMEOUT,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self._name = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        self._first_byte_timeout = first_byte_timeout
        self._handshake_timeout = handshake_timeout
        self._linger_timeout = linger_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._waiting: dict[int, _Waiting] = {}
        self._handshakes: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        """Register with the runner and start accepting. Returns at once."""
        await super().start()
        self._loop = asyncio.get_running_loop()
        self._sock.setblocking(False)
        self._sock.listen(self._backlog)
        self._accepting = self._loop.create_task(self._accept_loop(), name=f"accept {self.name}")

    async def stop(self) -> None:
        """Stop accepting and close every connection not yet handed to aiohttp (see the
        module docstring); returns once the accept loop and all handshakes have ended."""
        if self._accepting is not None:
            await cancel_and_wait(self._accepting)
            self._accepting = None
        self._sock.close()
        for waiting in list(self._waiting.values()):
            self._close(waiting)
        handshakes = list(self._handshakes)
        for task in handshakes:
            task.cancel()
        await asyncio.gather(*handshakes, return_exceptions=True)
        await super().stop()

    # -- accepting ---------------------------------------------------------------------------

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        accepted = 0
        while True:
            try:
                conn, remote = await loop.sock_accept(self._sock)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                if exc.errno in _ACCEPT_SKIP_ERRNOS:
                    continue
                level = logging.ERROR if exc.errno in _ACCEPT_PAUSE_ERRNOS else logging.WARNING
                log.log(level, "accept failed, pausing", extra={"error": str(exc)})
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            self._watch(loop, conn, remote)
            accepted += 1
            if accepted % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _watch(self, loop: asyncio.AbstractEventLoop, conn: socket.socket, remote: object) -> None:
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # already reset by the client
            conn.close()
            return
        waiting = _Waiting(conn, remote)
        self._waiting[waiting.fd] = waiting
        waiting.timer = loop.call_later(self._first_byte_timeout, self._silent, waiting)
        loop.add_reader(waiting.fd, self._first_byte, waiting)

    # -- the first byte ----------------------------------------------------------------------

    def _first_byte(self, waiting: _Waiting) -> None:
        try:
            head = waiting.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return  # spurious readiness: keep waiting
        except OSError:
            self._close(waiting)
            return
        if not head:  # the client closed without a word
            self._close(waiting)
        elif head[0] == _TLS_HANDSHAKE_RECORD:
            self._hand_over(waiting)
        elif head[0] in _HTTP_METHOD_INITIALS:
            self._refuse(waiting)
        else:
            log.debug("neither TLS nor HTTP, closed", extra={"remote": str(waiting.remote)})
            self._close(waiting)

    def _silent(self, waiting: _Waiting) -> None:
        log.debug("no first byte in time, closed", extra={"remote": str(waiting.remote)})
        self._close(waiting)

    def _release(self, waiting: _Waiting) -> socket.socket:
        """Unregister ``waiting`` (reader, timer); the caller owns its socket from here."""
        assert self._loop is not None
        self._loop.remove_reader(waiting.fd)
        if waiting.timer is not None:
            waiting.timer.cancel()
        self._waiting.pop(waiting.fd, None)
        return waiting.sock

    def _close(self, waiting: _Waiting) -> None:
        self._release(waiting).close()

    # -- TLS ---------------------------------------------------------------------------------

    def _hand_over(self, waiting: _Waiting) -> None:
        assert self._loop is not None
        sock = self._release(waiting)
        task = self._loop.create_task(self._handshake(sock, waiting.remote))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, sock: socket.socket, remote: object) -> None:
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        try:
            await loop.connect_accepted_socket(
                server,
                sock,
                ssl=self._ssl_context,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except asyncio.CancelledError:
            sock.close()  # a no-op when the loop's transport closed it already
            raise
        except OSError as exc:  # ssl.SSLError, reset, handshake timeout: the client's fault
            sock.close()
            log.debug("TLS handshake failed", extra={"remote": str(remote), "error": repr(exc)})
        except Exception:
            sock.close()
            log.exception("cannot serve an accepted TLS connection")

    # -- plain HTTP --------------------------------------------------------------------------

    def _refuse(self, waiting: _Waiting) -> None:
        assert self._loop is not None
        sock = waiting.sock
        try:
            sock.recv(_DRAIN_CHUNK)  # the request so far: unread bytes would make close() a reset
            sock.send(PLAIN_HTTP_ANSWER)  # a fresh socket's buffer takes it whole
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(waiting)
            return
        log.info("plain HTTP on the TLS port refused", extra={"remote": str(waiting.remote)})
        self._loop.remove_reader(waiting.fd)
        if waiting.timer is not None:
            waiting.timer.cancel()
        waiting.timer = self._loop.call_later(self._linger_timeout, self._close, waiting)
        self._loop.add_reader(waiting.fd, self._drain, waiting)

    def _drain(self, waiting: _Waiting) -> None:
        try:
            data = waiting.sock.recv(_DRAIN_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client read the answer and closed
            self._close(waiting)
