"""Fixtures for the origin's API tests: the real application on a loopback port.

``origin`` is an :class:`OriginUnderTest` (default config on a temp root); ``origin_factory``
builds one with options (read-only, delete disabled, blob size limit, external host, clock).
Helpers on the object speak plain HTTP to the server; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from origin.app import create_app
from regcore.config import load_origin_config

ERR = "errors"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class OriginUnderTest:
    """A running origin app plus helpers that look at its storage root."""

    sha256 = staticmethod(sha256)

    def __init__(self, client: TestClient, root: Path) -> None:
        self.client = client
        self.root = root
        self.app = client.app
        self.v2 = root / "docker" / "registry" / "v2"

    # -- disk --------------------------------------------------------------------------------
    def blob_files(self) -> list[Path]:
        """Every committed blob file (``blobs/**/data``)."""
        return sorted((self.v2 / "blobs").rglob("data"))

    def upload_dirs(self, name: str | None = None) -> list[Path]:
        base = self.v2 / "repositories"
        dirs = [p for p in base.rglob("_uploads/*") if p.is_dir()]
        if name is not None:
            dirs = [p for p in dirs if p.parent.parent == base / name]
        return sorted(dirs)

    def incomplete_files(self) -> list[Path]:
        d = self.v2 / "_incomplete"
        return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []

    # -- HTTP --------------------------------------------------------------------------------
    async def start(self, name: str) -> str:
        """POST a new session; returns its Location."""
        resp = await self.client.post(f"/v2/{name}/blobs/uploads/")
        assert resp.status == 202, await resp.text()
        return resp.headers["Location"]

    async def patch(self, loc: str, data: bytes, start: int | None = None, **kw: Any) -> Any:
        headers = {"Content-Type": "application/octet-stream"}
        if start is not None:
            headers["Content-Range"] = f"{start}-{start + len(data) - 1}"
        headers.update(kw.pop("headers", {}))
        body: Any = io.BytesIO(data) if len(data) > 1 << 20 else data  # aiohttp warns on big bytes
        return await self.client.patch(loc, data=body, headers=headers, **kw)

    async def push(self, name: str, data: bytes, chunk: int | None = None) -> str:
        """Chunked push (POST, PATCHes, PUT); returns the digest."""
        loc = await self.start(name)
        step = chunk or max(len(data), 1)
        for off in range(0, len(data), step):
            resp = await self.patch(loc, data[off : off + step], start=off)
            assert resp.status == 202, await resp.text()
            loc = resp.headers["Location"]
        dg = sha256(data)
        resp = await self.client.put(loc, params={"digest": dg})
        assert resp.status == 201, await resp.text()
        return dg

    async def raw(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        """Send ``path`` byte for byte (no client-side normalisation of ``..`` or ``%2F``);
        returns (status, JSON body or {})."""
        server = self.client.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, (json.loads(body) if body.startswith(b"{") else {})

    async def error_code(self, resp: Any) -> str:
        body = await resp.json()
        return body[ERR][0]["code"]


OriginFactory = Callable[..., Awaitable[OriginUnderTest]]


@pytest.fixture
def origin_factory(aiohttp_client: Any, tmp_path: Path) -> OriginFactory:
    async def make(
        *, root: Path | None = None, overrides: dict[str, Any] | None = None, **create: Any
    ) -> OriginUnderTest:
        r = root or tmp_path / "root"
        settings = {
            "storage.filesystem.rootdirectory": str(r),
            "storage.delete.enabled": True,  # the API tests exercise deletes (default: off)
            **(overrides or {}),
        }
        config = load_origin_config(None, {}, settings)
        client = await aiohttp_client(create_app(config, **create))
        return OriginUnderTest(client, r)

    return make


@pytest.fixture
async def origin(origin_factory: OriginFactory) -> OriginUnderTest:
    return await origin_factory()
