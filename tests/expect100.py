"""A raw-socket HTTP/1.1 client for ``Expect: 100-continue`` tests: it shows whether a
``100 Continue`` came before the answer and sends the body only after one did.

:func:`send_expecting` writes the request head byte for byte to a test server;
:func:`refused` checks a refusal answered instead of the 100 and that the server then ends the
connection. Every wait is bounded (:data:`WAIT` s per answer).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import BaseTestServer

from regcore.unreadbody import LINGER

WAIT = 5.0  # seconds any single answer may take


@dataclass
class Exchange:
    """One request sent with ``Expect: 100-continue`` on a fresh connection."""

    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before the answer
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    body_sent: bool = False
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    def code(self) -> str:
        return self.json()["errors"][0]["code"]

    async def server_closes(self, timeout: float) -> bool:
        """True if the server ends the connection within ``timeout`` s while we stay silent
        (what it sends meanwhile is ignored)."""
        assert self.reader is not None
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def raw_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    status_line, *lines = raw.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers


async def send_expecting(
    server: BaseTestServer,
    method: str,
    target: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    length: int | None = None,
) -> Exchange:
    """Send the head with ``Expect: 100-continue`` and ``Content-Length`` (``length``, default
    ``len(body)``) to ``server`` (a started test server, e.g. ``client.server``), wait up to
    :data:`WAIT` s for its first answer, send ``body`` only after a ``100 Continue``; return
    what came. The connection stays open (``close()``)."""
    host, port = server.host, server.port
    assert port is not None, "the test server is not started"
    reader, writer = await asyncio.open_connection(host, port)
    ex = Exchange(reader=reader, writer=writer)
    fields = {"Content-Type": "application/octet-stream", **(headers or {})}
    head = [
        f"{method} {target} HTTP/1.1",
        f"Host: {host}:{port}",
        "Expect: 100-continue",
        f"Content-Length: {len(body) if length is None else length}",
        *(f"{k}: {v}" for k, v in fields.items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    await writer.drain()
    status, got = await raw_head(reader)
    while 100 <= status < 200:
        ex.interim.append(status)
        if status == 100 and not ex.body_sent:
            writer.write(body)
            await writer.drain()
            ex.body_sent = True
        status, got = await raw_head(reader)
    ex.status, ex.headers = status, got
    if "content-length" in got:
        ex.body = await asyncio.wait_for(reader.readexactly(int(got["content-length"])), WAIT)
    return ex


async def refused(ex: Exchange, status: int, code: str, *, silent: bool = False) -> dict[str, Any]:
    """``ex`` was answered ``status``/``code`` with no 100 before, without its body being
    sent, as the connection's last answer (``Connection: close``); the server then ends the
    connection: within 1 s when the client ends its side (as clients do on such an answer),
    within a bounded time when the client (``silent``) neither sends the body nor closes."""
    try:
        assert ex.interim == [], f"{ex.interim} came before the {ex.status} answer"
        assert not ex.body_sent
        assert ex.status == status, ex.body
        assert ex.code() == code, ex.body
        assert ex.headers.get("connection", "").lower() == "close", ex.headers
        assert ex.writer is not None
        if not silent:
            ex.writer.write_eof()
        bound = LINGER + 3.0 if silent else 1.0
        assert await ex.server_closes(bound), f"the connection was still open after {bound} s"
        return ex.json()
    finally:
        ex.close()
