"""Fixtures for the origin's operations features (gc, retention, immutability, quotas,
inventory): the real application on a loopback port, images pushed over HTTP, and helpers
that age files on disk (push times are file times) and look at the storage root.

``ops_origin(ops={...})`` starts an origin whose ``quayside:`` section is ``ops`` and whose
audit/event sinks append to ``origin.audit`` / ``origin.events``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from harness.images import Image, ImageIndex, sha256_digest
from origin import state
from origin.app import create_app
from regcore.config import load_origin_config


class OpsOrigin:
    """A running origin plus helpers; ``ops`` is its :class:`origin.ops.OriginOps`."""

    def __init__(self, client: TestClient, root: Path) -> None:
        self.client = client
        self.root = root
        self.v2 = root / "docker" / "registry" / "v2"
        self.ops = client.app[state.OPS]
        self.audit: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    # -- pushing -------------------------------------------------------------------------
    async def blob(self, repo: str, data: bytes) -> str:
        digest = sha256_digest(data)
        resp = await self.client.post(
            f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=data
        )
        assert resp.status == 201, await resp.text()
        return digest

    async def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> Any:
        return await self.client.put(
            f"/v2/{repo}/manifests/{ref}", data=body, headers={"Content-Type": media_type}
        )

    async def push(self, repo: str, item: Image | ImageIndex, tag: str | None = None) -> str:
        """Push an image or index (children and blobs first); returns its digest."""
        children = item.images if isinstance(item, ImageIndex) else ()
        for child in children:
            await self.push(repo, child)
        if isinstance(item, Image):
            for data in item.blobs().values():
                await self.blob(repo, data)
        resp = await self.put_manifest(repo, tag or item.digest, item.manifest, item.media_type)
        assert resp.status == 201, await resp.text()
        return item.digest

    async def delete(self, repo: str, ref: str) -> int:
        resp = await self.client.delete(f"/v2/{repo}/manifests/{ref}")
        return resp.status

    async def pull_ok(self, repo: str, item: Image | ImageIndex, ref: str | None = None) -> bool:
        """Manifest by ``ref`` (default digest) and every blob of ``item`` answer 200 with the
        right bytes."""
        resp = await self.client.get(
            f"/v2/{repo}/manifests/{ref or item.digest}",
            headers={"Accept": item.media_type},
        )
        if resp.status != 200 or await resp.read() != item.manifest:
            return False
        for digest, data in item.blobs().items():
            resp = await self.client.get(f"/v2/{repo}/blobs/{digest}")
            if resp.status != 200 or await resp.read() != data:
                return False
        return True

    # -- disk ----------------------------------------------------------------------------
    def blob_file(self, digest: str) -> Path:
        alg, hexpart = digest.split(":")
        return self.v2 / "blobs" / alg / hexpart[:2] / hexpart / "data"

    def has_blob(self, digest: str) -> bool:
        return self.blob_file(digest).is_file()

    def repo_dir(self, repo: str) -> Path:
        return self.v2 / "repositories" / repo

    def tag_link(self, repo: str, tag: str) -> Path:
        return self.repo_dir(repo) / "_manifests" / "tags" / tag / "current" / "link"

    def age_everything(self, seconds: float) -> None:
        """Backdate every file under the root by ``seconds`` (mtime and atime)."""
        past = time.time() - seconds
        for dirpath, _dirs, files in os.walk(self.v2):
            for f in files:
                os.utime(os.path.join(dirpath, f), (past, past))

    def set_mtime(self, path: Path, when: float) -> None:
        os.utime(path, (when, when))

    async def gc(self, **kwargs: Any) -> Any:
        kwargs.setdefault("grace", 0.0)
        return await self.ops.run_gc(**kwargs)


OpsFactory = Callable[..., Awaitable[OpsOrigin]]


@pytest.fixture
def ops_origin(aiohttp_client: Any, tmp_path: Path) -> OpsFactory:
    async def make(
        *, ops: dict[str, Any] | None = None, root: Path | None = None, **overrides: Any
    ) -> OpsOrigin:
        r = root or tmp_path / "root"
        settings: dict[str, Any] = {
            "storage.filesystem.rootdirectory": str(r),
            "storage.delete.enabled": True,  # the tests delete manifests to make garbage
            **overrides,
        }
        if ops:
            settings["quayside"] = ops
        config = load_origin_config(None, {}, settings)
        sinks: dict[str, list[dict[str, Any]]] = {"audit": [], "events": []}
        app = create_app(
            config,
            audit=lambda e: sinks["audit"].append(dict(e)),
            events=lambda e: sinks["events"].append(dict(e)),
        )
        origin = OpsOrigin(await aiohttp_client(app), r)
        origin.audit, origin.events = sinks["audit"], sinks["events"]
        return origin

    return make


def manifest_json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
