"""The CPU floor of a verifying cold fill on this machine, measured beside every cold repetition.

A cache that never serves unverified bytes and keeps the page cache clean must, for every byte
of a cold blob: receive it from the upstream's socket, hash it (SHA-256), write it to disk
(``O_DIRECT``, as the edge does) and send it to the client's socket. :func:`relay_floor` does
exactly that and nothing else, in one thread, for one blob fetched over loopback from an
upstream registry, with the same 2 MiB aligned pieces and 256 KiB ``SO_RCVLOWAT`` as the edge's
fill, and sends to a real loopback TCP client (a thread that reads and discards). It has no
event loop, no hand-off between threads, no waiter bookkeeping and no HTTP server, so its CPU
time (``time.thread_time`` of that one thread: user + system, including the loopback network
processing the kernel charges to a sender) is what no verifying design can go below here. The
edge's CPU per GiB is reported against it beside the SHA-256-only ratio.

With ``verify=False`` the same relay skips the hash (and the digest check): what receiving,
writing and sending cost alone. It splits the floor into the hash and the rest, so a CPU
target stated as a multiple of SHA-256 can be checked against what moving the bytes needs
before any hashing.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PIECE = 2 << 20  # the edge's fill piece
_LOWAT = 256 << 10  # the edge's SO_RCVLOWAT
_HEAD_LIMIT = 64 << 10
_TIMEOUT = 60.0


class FloorError(RuntimeError):
    """The floor could not be measured (upstream refused, short body, wrong digest)."""


@dataclass(frozen=True)
class Floor:
    """One measurement: CPU seconds of the relaying thread, per GiB of blob."""

    seconds_per_gib: float
    size: int


def relay_floor(
    upstream: str, repo: str, digest: str, directory: Path, *, verify: bool = True
) -> Floor:
    """Receive ``repo``'s blob ``digest`` from ``upstream`` (``http://host:port``), hash it
    (unless not ``verify``), write it into a new file in ``directory`` and send it to a local
    client; the file is removed afterwards.

    Raises:
        FloorError: the upstream did not answer 200 with a Content-Length, the body was
            short, or (``verify``) its digest is not ``digest``.
    """
    parts = urlsplit(upstream)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with contextlib.ExitStack() as stack:
        up = stack.enter_context(socket.create_connection((host, port), timeout=_TIMEOUT))
        request = (
            f"GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Connection: close\r\n\r\n"
        )
        up.sendall(request.encode())
        size, early = _read_head(up)
        client, sink = _client_pair(stack)
        path = directory / f"floor-{os.getpid()}-{threading.get_ident()}"
        stack.callback(_unlink, path)
        started = time.thread_time()
        got = _relay(up, client, path, size, early, digest if verify else None)
        used = time.thread_time() - started
        client.shutdown(socket.SHUT_WR)
        sink.join(_TIMEOUT)
    if verify and got != digest:
        raise FloorError(f"upstream sent bytes hashing to {got}, not {digest}")
    return Floor(used * (1 << 30) / size, size)


def _read_head(up: socket.socket) -> tuple[int, bytes]:
    """Status line and headers; returns (Content-Length, body bytes already read)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = up.recv(65536)
        if not more:
            raise FloorError("upstream closed before its headers ended")
        data += more
        if len(data) > _HEAD_LIMIT:
            raise FloorError("upstream headers too long")
    head, _, early = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 200"):
        raise FloorError(f"upstream answered {lines[0]!r}")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value.strip()), early
    raise FloorError("upstream sent no Content-Length")


def _client_pair(stack: contextlib.ExitStack) -> tuple[socket.socket, threading.Thread]:
    """A loopback TCP connection: our sending end, and a thread reading the other to EOF."""
    listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
    port = listener.getsockname()[1]
    reader = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT))
    conn, _ = listener.accept()
    stack.enter_context(conn)
    conn.settimeout(_TIMEOUT)

    def drain() -> None:
        buf = bytearray(1 << 20)
        with contextlib.suppress(OSError):
            while reader.recv_into(buf):
                pass

    sink = threading.Thread(target=drain, name="floor-client", daemon=True)
    sink.start()
    return conn, sink


def _relay(
    up: socket.socket,
    client: socket.socket,
    path: Path,
    size: int,
    early: bytes,
    digest: str | None,
) -> str | None:
    """The timed part: every byte received once, hashed once (unless ``digest`` is None: then
    nothing is hashed and None returned), written once, sent once."""
    h = hashlib.new(digest.split(":", 1)[0]) if digest is not None else None
    piece = mmap.mmap(-1, PIECE)  # page-aligned, as O_DIRECT needs
    view = memoryview(piece)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    direct = _direct_fd(path)
    chunk: memoryview | None = None
    try:
        with contextlib.suppress(OSError):
            up.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, _LOWAT)
        filled = len(early)
        view[:filled] = early
        if h is not None:
            h.update(view[:filled])
        client.sendall(view[:filled])
        done = 0
        while done + filled < size:
            n = up.recv_into(view[filled : min(PIECE, filled + size - done - filled)])
            if n == 0:
                raise FloorError(f"upstream body ended at {done + filled} of {size} bytes")
            chunk = view[filled : filled + n]
            if h is not None:
                h.update(chunk)
            client.sendall(chunk)
            filled += n
            if filled == PIECE:
                os.pwrite(direct if direct is not None else fd, view, done)
                done += PIECE
                filled = 0
        if filled:  # the unaligned tail: an ordinary write
            os.pwrite(fd, view[:filled], done)
        return f"{h.name}:{h.hexdigest()}" if h is not None else None
    finally:
        if chunk is not None:
            chunk.release()
        view.release()
        piece.close()
        os.close(fd)
        if direct is not None:
            os.close(direct)


def _direct_fd(path: Path) -> int | None:
    if not hasattr(os, "O_DIRECT"):
        return None
    try:
        return os.open(path, os.O_WRONLY | os.O_DIRECT)
    except OSError:  # the filesystem refuses direct I/O (tmpfs): buffered writes
        return None


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
