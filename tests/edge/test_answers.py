"""What the edge answers a client, tried as a new user would: every answer names the server
without versions; a client's own mistakes (a malformed ``?ns=``, a bad pagination number the
upstream refuses) stay 4xx OCI errors; an upstream that is down or hung is a 502/504 whose
body names no internal URL. Real upstreams (docker-registry, the origin app) or a closed
port; an in-test server only where a fault must be injected (a hung upstream).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from harness.fixtures import ImageFactory
from harness.ports import free_port
from harness.registry import DockerRegistry
from tests.edge.conftest import OCI_ACCEPT, MakeEdge, push


async def test_every_edge_answer_says_server_quayside_without_versions(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image()
    await push(docker_registry.url, "team/app", "v1", img)
    e = await make_edge({"local": docker_registry.url})
    layer = img.layers[0].digest
    answers = [
        await e.client.get("/v2/"),
        await e.client.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_ACCEPT}),
        await e.client.get(f"/v2/team/app/blobs/{layer}"),  # cold: streamed from the fill
        await e.client.get(f"/v2/team/app/blobs/{layer}"),  # warm: zero-copy from the cache
        await e.client.head(f"/v2/team/app/blobs/{layer}"),
        await e.client.get("/v2/team/app/tags/list"),
        await e.client.get("/v2/team/app/manifests/nope", headers={"Accept": OCI_ACCEPT}),
        await e.client.delete("/v2/team/app/manifests/v1"),
        await e.client.get("/metrics"),
        await e.client.get("/healthz"),
    ]
    assert [r.status for r in answers] == [200, 200, 200, 200, 200, 200, 404, 405, 200, 200]
    for resp in answers:
        await resp.read()
        assert resp.headers.getall("Server") == ["quayside"], resp
