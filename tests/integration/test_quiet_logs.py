"""Client faults are one quiet log line; our own bugs keep their traceback (real processes).

A real origin and a real edge (its upstream is that origin) are hit by raw sockets: a client
that resets the connection mid-blob (zero-copy path: cached blob, and a blob while its fill
runs) and malformed requests (a bad request line and a bad header, on a second request of a
keep-alive connection, where aiohttp used to log an error with a traceback). The server log
must then hold no error line and no traceback, and one info line saying what happened. A
small server process built the same way (``regcore.serving.serve_app`` with the standard
middlewares) whose handler has a deliberate bug proves tracebacks are still logged for bugs.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from harness.bigblobs import push_large_blob, random_blob
from harness.images import MiB
from harness.procs import wait_until
from harness.servers import QuaysideServer, ServerGroup
from harness.service import ListeningLineService

pytestmark = pytest.mark.slow

REPO = "team/quiet"


def _events(server: ListeningLineService) -> list[dict[str, Any]]:
    out = []
    for line in server.log_text().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _assert_quiet(server: ListeningLineService) -> None:
    text = server.log_text()
    errors = [e for e in _events(server) if e.get("level") in ("error", "critical")]
    assert errors == [], text[-4000:]
    assert "Traceback" not in text, text[-4000:]


def _reset_mid_body(host: str, port: int, path: str, read_bytes: int = 256 * 1024) -> int:
    """GET ``path``, read ``read_bytes`` of the answer, then reset the connection (RST).
    Returns the bytes read."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        got = 0
        while got < read_bytes:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        assert got >= read_bytes, "the server ended the answer early"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return got
    finally:
        sock.close()


def _exchange(host: str, port: int, payload: bytes, *, first: bytes = b"") -> bytes:
    """Send ``first`` (a good request) and read its whole answer, then send ``payload`` on the
    same connection and read until the server closes it (bounded). Returns all bytes read."""
    with socket.create_connection((host, port), timeout=10) as sock:
        data = b""
        if first:
            sock.sendall(first)
            while b"\r\n\r\n{}" not in data:  # /v2/ answers "{}"
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
        sock.sendall(payload)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


GOOD = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"
MALFORMED = {
    "request line": b"GET /v2/\x01bad HTTP/1.1\r\nHost: x\r\n\r\n",
    "header": b"GET /v2/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
}


async def _push(url: str, size: int, seed: int) -> str:
    async with aiohttp.ClientSession() as session:
        return await push_large_blob(session, url, REPO, random_blob(size, seed))


async def test_client_reset_mid_blob_on_origin_and_edge_is_one_info_line(
    servers: ServerGroup,
):
    origin = servers.origin()
    edge = servers.edge({"origin": origin.url})
    cached = await _push(origin.url, 32 * MiB, seed=1)
    cold = await _push(origin.url, 48 * MiB, seed=2)
    async with aiohttp.ClientSession() as session:  # fill the edge's cache with one blob
        async with session.get(f"{edge.url}/v2/{REPO}/blobs/{cached}") as resp:
            assert resp.status == 200 and len(await resp.read()) == 32 * MiB

    cases: list[tuple[QuaysideServer, str]] = [
        (origin, cached),  # origin: zero-copy from its store
        (edge, cached),  # edge: zero-copy from its cache
        (edge, cold),  # edge: while the fill runs
    ]
    for server, digest in cases:
        path = f"/v2/{REPO}/blobs/{digest}"
        before = _gone_lines(server, path)
        _reset_mid_body("127.0.0.1", server.port, path)
        wait_until(lambda s=server, p=path, n=before: _gone_lines(s, p) > n, timeout=10)
    # the fill cut short by its client still completes: the edge serves the cold blob whole
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{edge.url}/v2/{REPO}/blobs/{cold}") as resp:
            assert resp.status == 200 and len(await resp.read()) == 48 * MiB
    for server in (origin, edge):
        _assert_quiet(server)


def _gone_lines(server: QuaysideServer, path: str) -> int:
    return sum(
        1
        for e in _events(server)
        if e.get("msg") == "client went away" and e.get("path") == path and e["level"] == "info"
    )


@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_malformed_request_is_refused_with_one_info_line(servers: ServerGroup, kind: str):
    origin = servers.origin()
    edge = servers.edge({"origin": origin.url})
    for server in (origin, edge):
        answer = _exchange("127.0.0.1", server.port, MALFORMED[kind], first=GOOD)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]  # the good request first
        assert b" 400 Bad Request" in answer, answer[-400:]
        wait_until(lambda s=server: _malformed_lines(s) >= 1, timeout=10)
        assert _malformed_lines(server) == 1, server.log_text()[-3000:]
        _assert_quiet(server)


def _malformed_lines(server: ListeningLineService) -> int:
    return sum(
        1
        for e in _events(server)
        if e.get("msg") == "malformed request refused" and e.get("level") == "info"
    )


def test_malformed_upload_body_is_400_and_one_info_line(servers: ServerGroup):
    origin = servers.origin()
    with urllib.request.urlopen(
        urllib.request.Request(f"{origin.url}/v2/{REPO}/blobs/uploads/", method="POST"), timeout=10
    ) as resp:
        location = resp.headers["Location"]
    path = urlsplit(location).path if "://" in location else location
    body = b"this is not gzip" * 8
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    answer = _exchange("127.0.0.1", origin.port, head.encode() + body)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["errors"][0]
    assert error["code"] == "BLOB_UPLOAD_INVALID"
    assert error["detail"] == {"reason": "Can not decode content-encoding: gzip"}
    wait_until(lambda: any(e.get("msg") == "malformed request body" for e in _events(origin)))
    lines = [e for e in _events(origin) if e.get("msg") == "malformed request body"]
    assert len(lines) == 1 and lines[0]["level"] == "info" and lines[0]["path"] == path
    _assert_quiet(origin)


BUGGY_SERVER = """
import sys
from aiohttp import web
from regcore import serving
from regcore.http import standard_middlewares
from regcore.logging import setup_logging


async def bug(request):
    raise RuntimeError("deliberate bug in a test handler")


async def main():
    setup_logging("info")
    app = web.Application(middlewares=standard_middlewares())
    app.router.add_get("/bug", bug)
    sock, url = serving.bind("127.0.0.1", 0)
    return await serving.serve_app(app, sock, url, name="buggy")


sys.exit(serving.run(main()))
"""


class BuggyServer(ListeningLineService):
    log_name = "buggy.log"

    def __init__(self, workdir: Path) -> None:
        super().__init__(name="buggy", workdir=workdir, start_timeout=20.0)
        self.script = workdir / "buggy_server.py"

    def prepare(self) -> None:
        self.script.write_text(BUGGY_SERVER)

    def argv(self) -> list[str]:
        return [sys.executable, str(self.script)]


def test_a_bug_in_a_handler_still_logs_its_traceback(tmp_path: Path):
    with BuggyServer(tmp_path / "buggy") as server:
        answer = _exchange(
            "127.0.0.1", server.port, b"GET /bug HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 500"), answer[:200]
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert body["errors"][0]["code"] == "UNKNOWN"
        assert "deliberate" not in answer.decode()  # no internals in the body
        wait_until(lambda: "Traceback" in server.log_text(), timeout=10)
        errors = [e for e in _events(server) if e.get("level") == "error"]
        assert len(errors) == 1, server.log_text()
        assert errors[0]["msg"] == "unhandled error"
        assert "RuntimeError: deliberate bug in a test handler" in errors[0]["exc"]
