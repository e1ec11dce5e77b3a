"""A fill's upstream body read straight from the connection's socket, off the event loop.

After aiohttp did the HTTP exchange (token dance, redirects, status, headers), the rest of a
blob body is plain bytes on a TCP socket. :class:`SocketBody` takes that socket over, so the
fill's writer thread (:meth:`regcore.storage.writepipeline.WritePipeline.absorb`) can
``recv_into`` its own buffer, hash and ``pwrite`` in place, without the event loop touching a
byte:

- :func:`can_take` says whether a response's body can be read that way: plain TCP (TLS bytes
  must pass the SSL object, which lives in the loop's transport), ``Content-Length`` equal to
  the bytes wanted, no ``Content-Encoding`` and no chunked transfer encoding (aiohttp's parser
  would hold framing state we cannot see). Anything else stays on aiohttp's reader.
- :meth:`SocketBody.take` first drains what aiohttp already buffered (the bytes that came with
  the headers, and any input its parser held back under flow control) into :attr:`prefix`,
  then stops the transport from reading (and aiohttp's read timer) and reads a ``dup`` of the
  socket with the read timeout the response had.
- It is a :class:`regcore.storage.writepipeline.Reader` (one thread reads it):
  :meth:`SocketBody.read_into` never blocks (0: nothing yet), :meth:`SocketBody.wait` blocks
  up to the read timeout (``TimeoutError`` after it). :class:`edge.sources.ShortStream` when
  the peer closes early, ``OSError`` as the socket fails: all transient, the fill resumes by
  ``Range`` on a new request. :meth:`SocketBody.interrupt` (any thread) makes a waiting read
  end at once; :meth:`SocketBody.close` (on the loop, once no thread reads) closes the
  duplicate and the response's connection (never reused: aiohttp's parser did not see the
  body's end).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket

import aiohttp

from edge.sources import ShortStream

DEFAULT_READ_TIMEOUT = 60.0  # seconds without a byte, when the response had no read timeout
MAX_LOWAT = 1 << 20  # bytes a wait may ask the kernel to gather before waking the reader


def can_take(resp: aiohttp.ClientResponse, wanted: int) -> bool:
    """Whether :meth:`SocketBody.take` can read the ``wanted`` remaining body bytes of ``resp``."""
    conn = resp.connection
    transport = conn.transport if conn is not None else None
    if conn is None or conn.protocol is None or transport is None or transport.is_closing():
        return False
    if transport.get_extra_info("sslcontext") is not None:
        return False
    if transport.get_extra_info("ssl_object") is not None:
        return False
    if transport.get_extra_info("socket") is None:
        return False
    headers = resp.headers
    if headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        return False
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return False
    return resp.content_length == wanted and resp.content.exception() is None


class SocketBody:
    """The rest of one response body: :attr:`prefix` (already buffered), then
    :attr:`remaining` bytes from the socket. See the module docstring."""

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        prefix: bytes,
        remaining: int,
        sock: socket.socket | None,
    ) -> None:
        self.prefix = prefix
        self.remaining = remaining
        self._resp = resp
        self._sock = sock
        self._lowat = 1

    @classmethod
    def take(cls, resp: aiohttp.ClientResponse, wanted: int) -> SocketBody:
        """Take over the body of ``resp`` (:func:`can_take` must have said yes), of which
        ``wanted`` bytes are still to come. Call on the loop, before anything else reads it."""
        content = resp.content
        pieces: list[bytes] = []
        got = 0
        while got < wanted:  # each read may let aiohttp's parser feed what it held back
            piece = content.read_nowait()
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
        prefix = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if got > wanted:
            raise ShortStream(f"response body longer than its {wanted} bytes")
        if got == wanted:
            return cls(resp, prefix, 0, None)
        conn = resp.connection
        assert conn is not None and conn.protocol is not None and conn.transport is not None
        protocol = conn.protocol
        timeout = protocol.read_timeout or DEFAULT_READ_TIMEOUT
        try:
            protocol.pause_reading()  # the transport stops reading; aiohttp's read timer stops
        except AssertionError:  # aiohttp's parser already let go of the payload
            conn.transport.pause_reading()
        raw = conn.transport.get_extra_info("socket")
        sock = socket.socket(fileno=os.dup(raw.fileno()))
        try:
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        body = cls(resp, prefix, wanted - got, sock)
        body.timeout = timeout
        return body

    timeout = DEFAULT_READ_TIMEOUT

    def read_into(self, view: memoryview) -> int:
        """Read what the socket has into ``view``; 0 when it has nothing yet (never blocks).

        Raises ShortStream when the peer closed, OSError (reset...)."""
        assert self._sock is not None
        try:
            n = self._sock.recv_into(view)
        except BlockingIOError:
            return 0
        if n == 0:
            raise ShortStream("upstream closed the connection mid-body")
        return n

    def wait(self, want: int = 1) -> None:
        """Block until the socket has ``want`` bytes (at most what is left of the body; the
        kernel's ``SO_RCVLOWAT``: one wake-up per that many bytes, not per segment) or is
        closed; TimeoutError after the read timeout without a byte."""
        assert self._sock is not None
        want = max(1, min(want, self.remaining, MAX_LOWAT))
        if want != self._lowat:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, want)
                self._lowat = want
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        if not poller.poll(self.timeout * 1000):
            raise TimeoutError(f"no byte from upstream for {self.timeout:g} s")

    def interrupt(self) -> None:
        """Make a blocked :meth:`recv_into` end soon (any thread)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the socket's duplicate and the response (call once no thread reads)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._resp.close()
