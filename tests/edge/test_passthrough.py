"""Pass-through: blobs the cache cannot hold are streamed from the upstream, never cached.

A 2 MiB cache in front of real docker-registry upstreams (plain and htpasswd-private) and an
in-test fault registry (a real aiohttp server speaking the blob API, with injected faults);
the edge is the real ``create_app`` on aiohttp's test server.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edge.cache import BlobCache
from edge.upstreamconfig import UpstreamConfig
from harness import oci_http
from harness.fixtures import ImageFactory
from harness.registry import DockerRegistry
from regcore.digest import Digest
from tests.edge.conftest import MakeEdge, RunningEdge, push, sha256

KiB = 1024
MiB = 1024 * KiB
CACHE = 2 * MiB


def _files(directory: Path) -> list[Path]:
    return [Path(root) / f for root, _, files in os.walk(directory) for f in files]


def _disk_bytes(cache: BlobCache) -> int:
    files = _files(cache.layout.blobs) + _files(cache.layout.incomplete)
    return sum(f.stat().st_size for f in files if f.exists())


def _cache(e: RunningEdge) -> BlobCache:
    assert e.edge.cache is not None
    return e.edge.cache


def _assert_nothing_cached(cache: BlobCache) -> None:
    assert _files(cache.layout.blobs) == []
    assert _files(cache.layout.incomplete) == []
    assert cache.bytes_used == 0 and cache.bytes_reserved == 0 and cache.entries == 0


async def _quiet(reg: DockerRegistry) -> None:
    await asyncio.to_thread(reg.wait_quiet, 0.15, 5.0)


class FaultRegistry:
    """A registry stand-in serving fixed blobs by digest (GET/HEAD, ``Range``), with faults.

    ``fault[digest]``: ``corrupt`` (a byte near the end flipped), ``cut`` (every response is
    cut after 512 KiB of its body), ``cut_once`` (the next un-ranged GET is cut after 1 MiB),
    ``hold`` (un-ranged GETs stop after 256 KiB until :attr:`release` is set).
    """

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.fault: dict[str, str] = {}
        self.release = asyncio.Event()
        self.gets: list[tuple[str, str | None]] = []
        self.url = ""

    async def start(self, aiohttp_server: Any) -> FaultRegistry:
        app = web.Application()
        app.router.add_get("/v2/", self._base)
        app.router.add_get("/v2/{name:.+}/blobs/{digest}", self._blob)
        server = await aiohttp_server(app)
        self.url = f"http://127.0.0.1:{server.port}"
        return self

    async def _base(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        data = self.blobs.get(digest)
        if data is None:
            body = b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}'
            return web.Response(status=404, body=body, content_type="application/json")
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(data))})
        rng = request.headers.get("Range")
        self.gets.append((digest, rng))
        fault = self.fault.get(digest)
        body = bytearray(data)
        if fault == "corrupt":
            body[-10] ^= 0xFF
        start, end = 0, len(body) - 1
        if rng:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end = int(first), int(last) if last else len(body) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
        resp = web.StreamResponse(status=206 if rng else 200, headers=headers)
        resp.content_length = end - start + 1
        payload = bytes(body[start : end + 1])
        cut_at = None
        if fault == "cut":
            cut_at = 512 * KiB
        elif fault == "cut_once" and not rng:
            cut_at, self.fault[digest] = 1 * MiB, "served"
        try:
            await resp.prepare(request)
            if cut_at is not None:
                await resp.write(payload[:cut_at])
                await asyncio.sleep(0.05)  # let the bytes leave before the reset
                assert request.transport is not None
                request.transport.abort()
                return resp
            if fault == "hold" and not rng:
                await resp.write(payload[: 256 * KiB])
                await self.release.wait()
                payload = payload[256 * KiB :]
            for pos in range(0, len(payload), 64 * KiB):
                await resp.write(payload[pos : pos + 64 * KiB])
            await resp.write_eof()
        except ConnectionResetError:  # the edge went away (e.g. a fill that found it too large)
            pass
        return resp


async def _fault_registry(aiohttp_server: Any, *sizes: int) -> tuple[FaultRegistry, list[bytes]]:
    blobs = [os.urandom(size) for size in sizes]
    reg = await FaultRegistry({sha256(b): b for b in blobs}).start(aiohttp_server)
    return reg, blobs


async def test_blob_larger_than_the_whole_cache_is_passed_through_twice_and_never_cached(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image(layer_sizes=(5 * MiB, 512 * KiB))
    await push(docker_registry.url, "team/big", "v1", img)
    big, small = img.layers
    assert big.size > 2 * CACHE
    docker_registry.mark_log()
    e = await make_edge({"local": docker_registry.url}, cache_size=CACHE)
    cache = _cache(e)
    url = f"/v2/team/big/blobs/{big.digest}"
    for _ in range(2):
        resp = await e.client.get(url)
        assert resp.status == 200
        assert resp.headers["Docker-Content-Digest"] == big.digest
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["ETag"] == f'"{big.digest}"'
        assert int(resp.headers["Content-Length"]) == big.size
        first = await resp.content.readexactly(256 * KiB)
        # mid-transfer: no reservation, no temp file, the bound holds on disk
        assert cache.bytes_reserved == 0 and _disk_bytes(cache) <= CACHE
        body = first + await resp.read()
        assert body == big.data and sha256(body) == big.digest
        _assert_nothing_cached(cache)
    resp = await e.client.head(url)
    assert resp.status == 200 and int(resp.headers["Content-Length"]) == big.size
    # a blob that fits is still filled and cached as usual
    resp = await e.client.get(f"/v2/team/big/blobs/{small.digest}")
    assert await resp.read() == small.data
    assert cache.peek(Digest.parse(small.digest)) is not None
    assert _disk_bytes(cache) <= CACHE
    await _quiet(docker_registry)
    # first request: the fill's GET (dropped after its headers said "too large"; the
    # registry may not log a dropped request) and the pass-through; the second goes straight
    # to pass-through, without a fill (the size is remembered)
    assert docker_registry.count("GET", f"/blobs/{big.digest}") in (2, 3)
    assert e.metric("fills_started") == 2  # the big blob once, the small one
    assert e.metric("passthrough", reason="too_large") == 2
    assert e.metric("passthrough_bytes") == 2 * big.size
    assert e.metric("bytes_served", source="passthrough") == 2 * big.size
    assert e.metric("passthrough_failed") == 0
    assert e.metric("fills_failed", reason="too_large") == 1


async def test_range_on_an_oversize_blob_is_206_with_the_right_bytes(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image(layer_sizes=(5 * MiB,))
    await push(docker_registry.url, "team/big", "v1", img)
    big = img.layers[0]
    data, size = big.data, big.size
    e = await make_edge({"local": docker_registry.url}, cache_size=CACHE)
    url = f"/v2/team/big/blobs/{big.digest}"
    resp = await e.client.get(url, headers={"Range": "bytes=1000-2099999"})  # a cold miss
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes 1000-2099999/{size}"
    assert resp.headers["Docker-Content-Digest"] == big.digest
    assert int(resp.headers["Content-Length"]) == 2099000
    assert await resp.read() == data[1000:2100000]
    resp = await e.client.get(url, headers={"Range": "bytes=-100"})
    assert resp.status == 206 and await resp.read() == data[-100:]
    resp = await e.client.get(url, headers={"Range": f"bytes={size - 5}-{size + 100}"})
    assert resp.status == 206 and await resp.read() == data[-5:]
    resp = await e.client.get(url, headers={"Range": "bytes=0-"})
    assert resp.status == 206 and await resp.read() == data
    resp = await e.client.get(url, headers={"Range": f"bytes={size}-"})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{size}"
    _assert_nothing_cached(_cache(e))
    assert e.metric("passthrough", reason="too_large") == 4


@pytest.mark.parametrize("fault", ["corrupt", "cut"])
async def test_oversize_blob_with_bad_upstream_bytes_is_a_failed_transfer_never_a_clean_200(
    fault: str, aiohttp_server: Any, make_edge: MakeEdge
) -> None:
    reg, (data,) = await _fault_registry(aiohttp_server, 5 * MiB)
    digest = sha256(data)
    reg.fault[digest] = fault
    e = await make_edge({"fault": reg.url}, cache_size=CACHE)
    resp = await e.client.get(f"/v2/team/app/blobs/{digest}")
    assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(data)
    received = 0
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in resp.content.iter_any():
            received += len(chunk)
    assert 0 < received < len(data)
    _assert_nothing_cached(_cache(e))
    assert e.metric("passthrough", reason="too_large") == 1
    assert e.metric("passthrough_failed") == 1
    assert e.metric("passthrough_bytes") == received
    if fault == "cut":  # resumed by Range until the client's resume budget ran out
        assert len([r for _, r in reg.gets if r]) >= 1


async def test_oversize_blob_cut_mid_stream_is_resumed_by_range(
    aiohttp_server: Any, make_edge: MakeEdge
) -> None:
    reg, (data,) = await _fault_registry(aiohttp_server, 5 * MiB)
    digest = sha256(data)
    e = await make_edge({"fault": reg.url}, cache_size=CACHE)
    url = f"/v2/team/app/blobs/{digest}"
    resp = await e.client.get(url, headers={"Range": "bytes=0-99"})  # learns "too large"
    assert resp.status == 206 and await resp.read() == data[:100]
    reg.fault[digest] = "cut_once"
    reg.gets.clear()
    resp = await e.client.get(url)
    assert resp.status == 200 and await resp.read() == data
    assert reg.gets[0] == (digest, None)
    assert len(reg.gets) == 2 and reg.gets[1][1] is not None  # resumed with Range
    assert int(reg.gets[1][1].removeprefix("bytes=").rstrip("-")) >= 512 * KiB
    _assert_nothing_cached(_cache(e))
    assert e.metric("passthrough_failed") == 0


async def test_fill_that_cannot_get_cache_space_in_time_is_passed_through(
    aiohttp_server: Any, make_edge: MakeEdge
) -> None:
    reg, (held, other) = await _fault_registry(aiohttp_server, 1536 * KiB, 1 * MiB)
    held_digest, other_digest = sha256(held), sha256(other)
    reg.fault[held_digest] = "hold"
    e = await make_edge({"fault": reg.url}, cache_size=CACHE)
    fills, cache = e.edge.fills, _cache(e)
    assert fills is not None
    fills.space_wait = 0.3
    try:
        first = await e.client.get(f"/v2/team/app/blobs/{held_digest}")
        assert first.status == 200
        assert await first.content.readexactly(64 * KiB) == held[: 64 * KiB]
        assert cache.bytes_reserved == len(held)  # 1.5 of 2 MiB held by a running fill
        resp = await e.client.get(f"/v2/team/app/blobs/{other_digest}")
        assert resp.status == 200 and await resp.read() == other
        assert resp.headers["Docker-Content-Digest"] == other_digest
        assert e.metric("passthrough", reason="no_space") == 1
        assert e.metric("fills_failed", reason="no_space") == 1
        assert cache.peek(Digest.parse(other_digest)) is None
    finally:
        reg.release.set()
    assert held[64 * KiB :] == await first.read()  # the last chunk comes after the commit
    assert cache.peek(Digest.parse(held_digest)) is not None
    # "no space" is not remembered: with room again the blob is filled and cached
    resp = await e.client.get(f"/v2/team/app/blobs/{other_digest}")
    assert await resp.read() == other
    assert cache.peek(Digest.parse(other_digest)) is not None
    assert e.metric("passthrough", reason="no_space") == 1
    assert cache.bytes_used <= CACHE and _disk_bytes(cache) <= CACHE


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_private_oversize_blob_is_passed_through_only_with_the_clients_access(
    registry_factory: Any, image_factory: ImageFactory, make_edge: MakeEdge, tmp_path: Path
) -> None:
    htpasswd = tmp_path / "htpasswd"
    out = await asyncio.to_thread(
        subprocess.run,
        ["htpasswd", "-Bbn", "alice", "s3cret"],
        capture_output=True,
        check=True,
        text=True,
    )
    htpasswd.write_text(out.stdout)
    reg = registry_factory(htpasswd=htpasswd)
    img = image_factory.image(layer_sizes=(3 * MiB,))
    alice, mallory = _basic("alice", "s3cret"), _basic("alice", "wrong")
    async with aiohttp.ClientSession(headers={"Authorization": alice}) as s:
        await oci_http.push_image(s, reg.url, "team/secret", "v1", img)
    big = img.layers[0]
    upstream = UpstreamConfig(
        private=True, name="private", url=reg.url, connect_timeout=1.0, read_timeout=2.0, retries=0
    )
    e = await make_edge(upstream_configs=(upstream,), cache_size=CACHE)
    url = f"/v2/team/secret/blobs/{big.digest}"
    assert (await e.client.get(url)).status == 401
    assert (await e.client.get(url, headers={"Authorization": mallory})).status == 401
    for _ in range(2):
        resp = await e.client.get(url, headers={"Authorization": alice})
        assert resp.status == 200 and await resp.read() == big.data
    assert (await e.client.get(url, headers={"Authorization": mallory})).status == 401
    _assert_nothing_cached(_cache(e))
    assert e.metric("passthrough", reason="too_large") == 2
    assert e.metric("auth_checks", result="denied") == 2
