"""What a client sees of a link: request round trips and bulk throughput, with plain sockets.

Blocking, bounded by a timeout on every socket operation, and namespace-agnostic: call these
from a thread inside the client's namespace (:meth:`harness.netns.Netns.entered`).

- :func:`round_trips`: one fresh connection, then ``n`` small GETs on it (keep-alive); the first
  figure is connect + first answer (what a new connection costs), the others are pure request
  round trips (what the RTT of the link is, plus the server's own few hundred microseconds);
- :func:`download`: one GET, body counted and discarded; bytes and seconds.

Raises :class:`ProbeError` when the server does not answer with an HTTP response.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


class ProbeError(RuntimeError):
    """No (complete) HTTP answer."""


@dataclass(frozen=True)
class RoundTrips:
    """Seconds: ``first`` = connect + first request on a new connection; ``requests`` = the
    following requests on the same connection."""

    first: float
    requests: tuple[float, ...]

    @property
    def median(self) -> float:
        s = sorted(self.requests)
        return s[len(s) // 2] if s else 0.0


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytearray]:
    """Read one response with a Content-Length body; return (status, leftover bytes)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ProbeError("connection closed before the response head")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise ProbeError(f"bad status line {lines[0]!r}") from exc
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ProbeError("connection closed inside the body")
        body += chunk
    return status, body[length:]


def round_trips(url: str, n: int = 10, *, timeout: float = 10.0) -> RoundTrips:
    """See the module docstring; ``url`` is ``http://HOST:PORT/path``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "User-Agent: quayside-bench-probe\r\n\r\n"
    ).encode()
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        times = []
        for i in range(n + 1):
            t0 = start if i == 0 else time.monotonic()
            sock.sendall(request)
            _status, buf = _read_response(sock, buf)
            times.append(time.monotonic() - t0)
    return RoundTrips(first=times[0], requests=tuple(times[1:]))


def download(url: str, *, timeout: float = 60.0) -> tuple[int, float]:
    """GET ``url`` (``Connection: close``), count the body; return (body bytes, seconds).

    Raises:
        ProbeError: not a 2xx answer, or the body ended (or was reset) before its length.
    """
    parts = urlsplit(url)
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "User-Agent: quayside-bench-probe\r\nConnection: close\r\n\r\n"
    ).encode()
    start = time.monotonic()
    deadline = start + timeout
    total = 0
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as sock:
        sock.sendall(request)
        head = bytearray()
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                raise ProbeError("connection closed before the response head")
            head += chunk
        status_line, _, _ = bytes(head).partition(b"\r\n")
        if not status_line.split(b" ")[1].startswith(b"2"):
            raise ProbeError(f"{url}: {status_line.decode('latin-1')}")
        end = head.index(b"\r\n\r\n")
        length = None
        for line in bytes(head[:end]).decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        total = len(head) - end - 4
        buf = bytearray(1 << 20)
        while True:
            if time.monotonic() > deadline:
                raise ProbeError(f"{url}: not done after {timeout:g}s")
            try:
                n = sock.recv_into(buf)
            except OSError as exc:
                raise ProbeError(f"{url}: {exc} after {total} body bytes") from exc
            if not n:
                break
            total += n
    if length is not None and total < length:
        raise ProbeError(f"{url}: body ended after {total} of {length} bytes")
    return total, time.monotonic() - start
