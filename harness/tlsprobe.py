"""Raw TCP probes of a server's TLS port: what does it do with bytes that are not TLS?

:func:`probe` connects, sends ``payload`` (possibly nothing) and reads until the server closes
the connection, resets it, or ``timeout`` passes. It returns a :class:`Probe`: the bytes read,
how the connection ended and after how many seconds (counted from the connect). Raises
``OSError`` only when the connection cannot be made. :func:`listen_backlog` reads a
listener's accept-queue length from ``ss``.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Literal

__all__ = ["GO_MESSAGE", "Probe", "listen_backlog", "probe"]

GO_MESSAGE = b"Client sent an HTTP request to an HTTPS server.\n"
"""The body Go's net/http (and Quayside) answers plain HTTP on a TLS port with."""


@dataclass(frozen=True)
class Probe:
    data: bytes
    ended: Literal["closed", "reset", "timeout"]
    seconds: float

    @property
    def status_line(self) -> bytes:
        return self.data.split(b"\r\n", 1)[0]

    @property
    def body(self) -> bytes:
        return self.data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in self.data else b""


def probe(host: str, port: int, payload: bytes, *, timeout: float = 20.0) -> Probe:
    """See the module docstring."""
    started = time.monotonic()
    data = b""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        if payload:
            sock.sendall(payload)
        while True:
            sock.settimeout(max(0.01, timeout - (time.monotonic() - started)))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return Probe(data, "timeout", time.monotonic() - started)
            except ConnectionResetError:
                return Probe(data, "reset", time.monotonic() - started)
            if not chunk:
                return Probe(data, "closed", time.monotonic() - started)
            data += chunk


def listen_backlog(port: int) -> int | None:
    """The accept-queue length the kernel gives the listener on ``port`` (``ss``'s Send-Q
    for a socket in LISTEN), or None when nothing listens there."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == "LISTEN":
            return int(fields[2])
    return None
