"""bench.relayfloor: the verifying relay floor measured against a real docker-registry."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bench.relayfloor import FloorError, relay_floor
from bench.scenarios.blobs import sha256_seconds_per_gib
from harness.bigblobs import push_large_blob, random_blob
from harness.faultserver import FaultServer
from harness.registry import DockerRegistry

SIZE = 24 * 1024 * 1024 + 4097  # pieces, and an unaligned tail


async def _push(url: str, data: bytes) -> str:
    async with aiohttp.ClientSession() as session:
        return await push_large_blob(session, url, "floor/blob", data)


def test_floor_relays_a_real_blob_and_costs_at_least_its_hash(tmp_path: Path) -> None:
    data = random_blob(SIZE, 7)
    with DockerRegistry(workdir=tmp_path / "registry") as registry:
        digest = asyncio.run(_push(registry.url, data))
        floors = tmp_path / "floors"
        floors.mkdir()
        floor = relay_floor(registry.url, "floor/blob", digest, floors)
    assert floor.size == SIZE
    # every byte was hashed in the timed thread: it cannot cost less than SHA-256 alone
    assert floor.seconds_per_gib > 0.9 * sha256_seconds_per_gib()
    assert list(floors.iterdir()) == []  # its file is gone


def test_unhashed_floor_relays_every_byte_without_checking_them(tmp_path: Path) -> None:
    """``verify=False`` moves the bytes the same way but hashes nothing: a body that is not
    the blob is relayed to the end (no digest to check), and a cut one still fails."""
    data = random_blob(3 * 1024 * 1024, 9)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    cut = False

    async def serve(request: web.Request) -> web.StreamResponse:
        if not cut:
            return web.Response(body=data[:-1] + b"x")
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        await response.write(data[:4096])
        assert request.transport is not None
        request.transport.close()
        return response

    with FaultServer().route("GET", "/v2/floor/blob/blobs/{digest}", serve) as server:
        floor = relay_floor(server.url, "floor/blob", digest, tmp_path, verify=False)
        assert floor.size == len(data) and floor.seconds_per_gib > 0
        with pytest.raises(FloorError, match="hashing to"):
            relay_floor(server.url, "floor/blob", digest, tmp_path)  # the same bytes, verified
        cut = True
        with pytest.raises(FloorError, match="upstream body ended at 4096"):
            relay_floor(server.url, "floor/blob", digest, tmp_path, verify=False)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_floor_refuses_an_unknown_blob(tmp_path: Path) -> None:
    with DockerRegistry(workdir=tmp_path / "registry") as registry:
        missing = "sha256:" + "0" * 64
        with pytest.raises(FloorError, match="404"):
            relay_floor(registry.url, "floor/blob", missing, tmp_path)


@pytest.mark.parametrize(
    ("fault", "message"),
    [("wrong bytes", "upstream sent bytes hashing to"), ("short body", "upstream body ended at")],
)
def test_floor_refuses_bytes_that_are_not_the_blob(
    tmp_path: Path, fault: str, message: str
) -> None:
    data = random_blob(3 * 1024 * 1024, 8)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    async def serve(request: web.Request) -> web.StreamResponse:
        if fault == "wrong bytes":
            return web.Response(body=data[:-1] + b"x")
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        assert request.transport is not None
        request.transport.close()  # cut mid-body
        return response

    with FaultServer().route("GET", "/v2/floor/blob/blobs/{digest}", serve) as server:
        with pytest.raises(FloorError, match=message):
            relay_floor(server.url, "floor/blob", digest, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == []
