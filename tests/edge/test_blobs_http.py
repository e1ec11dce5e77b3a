"""Blobs through the edge: hits, misses, HEAD, Range, failures, private upstreams, refusals."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from edge.upstreamconfig import UpstreamConfig
from harness.fixtures import ImageFactory
from harness.registry import DockerRegistry
from harness.slowproxy import SlowProxy
from regcore.digest import Digest
from tests.edge.conftest import MakeEdge, push, sha256


async def _quiet(reg: DockerRegistry) -> None:
    await asyncio.to_thread(reg.wait_quiet, 0.15, 5.0)


async def _pushed_layer(
    reg: DockerRegistry, image_factory: ImageFactory, size: int = 256 * 1024
) -> tuple[str, bytes]:
    img = image_factory.image(layer_sizes=(size,))
    await push(reg.url, "team/app", "v1", img)
    layer = img.layers[0]
    return layer.digest, layer.data


async def test_cold_miss_streams_then_hit_is_served_from_cache(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    digest, data = await _pushed_layer(docker_registry, image_factory, 900 * 1024)
    docker_registry.mark_log()
    e = await make_edge({"local": docker_registry.url})
    for _ in range(2):
        resp = await e.client.get(f"/v2/team/app/blobs/{digest}")
        assert resp.status == 200
        assert await resp.read() == data
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Docker-Content-Digest"] == digest
        assert resp.headers["ETag"] == f'"{digest}"'
        assert int(resp.headers["Content-Length"]) == len(data)
    await _quiet(docker_registry)
    assert docker_registry.count("GET", f"/blobs/{digest}") == 1
    assert e.metric("cache_misses", kind="blob") == 1
    assert e.metric("cache_hits", kind="blob") == 1
    assert e.metric("bytes_served", source="cache") == len(data)
    assert e.metric("bytes_served", source="fill") == len(data)
    assert e.metric("upstream_requests", upstream="local", method="GET", status="200") >= 1


async def test_head_on_miss_asks_upstream_with_head_and_never_downloads(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    digest, data = await _pushed_layer(docker_registry, image_factory)
    docker_registry.mark_log()
    e = await make_edge({"local": docker_registry.url})
    resp = await e.client.head(f"/v2/team/app/blobs/{digest}")
    assert resp.status == 200
    assert int(resp.headers["Content-Length"]) == len(data)
    assert resp.headers["Docker-Content-Digest"] == digest
    missing = sha256(b"nothing")
    resp = await e.client.head(f"/v2/team/app/blobs/{missing}")
    assert resp.status == 404
    await _quiet(docker_registry)
    assert docker_registry.count("GET", "/blobs/") == 0
    assert docker_registry.count("HEAD", f"/blobs/{digest}") == 1
    assert e.edge.cache is not None and e.edge.cache.peek(Digest.parse(digest)) is None


async def test_unknown_blob_is_blob_unknown(
    docker_registry: DockerRegistry, make_edge: MakeEdge
) -> None:
    e = await make_edge({"local": docker_registry.url})
    resp = await e.client.get(f"/v2/team/app/blobs/{sha256(b'nothing')}")
    assert resp.status == 404
    assert (await resp.json())["errors"][0]["code"] == "BLOB_UNKNOWN"
    resp = await e.client.get("/v2/team/app/blobs/sha256:abc")
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["code"] == "DIGEST_INVALID"


@pytest.mark.parametrize("warm", [False, True], ids=["cold-miss", "cache-hit"])
async def test_range_requests_on_miss_and_hit(
    warm: bool, docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    digest, data = await _pushed_layer(docker_registry, image_factory, 900 * 1024)
    e = await make_edge({"local": docker_registry.url})
    url = f"/v2/team/app/blobs/{digest}"
    if warm:
        assert await (await e.client.get(url)).read() == data
    resp = await e.client.get(url, headers={"Range": "bytes=1000-200999"})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes 1000-200999/{len(data)}"
    assert await resp.read() == data[1000:201000]
    resp = await e.client.get(url, headers={"Range": "bytes=-100"})
    assert resp.status == 206 and await resp.read() == data[-100:]
    resp = await e.client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(data)}"


async def test_upstream_sends_wrong_bytes_client_sees_failed_transfer_nothing_cached(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    digest, _ = await _pushed_layer(docker_registry, image_factory, 900 * 1024)
    path = docker_registry.blob_path(digest)
    corrupt = bytearray(path.read_bytes())
    corrupt[-10] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    # a slow link, so the client is mid-body when the fill finds the digest wrong
    with SlowProxy(docker_registry.url, rate="2MiB") as slow:
        e = await make_edge({"local": slow.url})
        resp = await e.client.get(f"/v2/team/app/blobs/{digest}")
        assert resp.status == 200
        received = 0
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in resp.content.iter_any():
                received += len(chunk)
        assert 0 < received < len(corrupt)
    assert e.edge.cache is not None and e.edge.cache.peek(Digest.parse(digest)) is None
    assert e.metric("fills_failed", reason="digest_invalid") == 1


async def test_small_blob_with_wrong_bytes_is_an_error_before_any_byte(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    digest, _ = await _pushed_layer(docker_registry, image_factory, 16 * 1024)
    path = docker_registry.blob_path(digest)
    corrupt = bytearray(path.read_bytes())
    corrupt[0] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    e = await make_edge({"local": docker_registry.url})
    resp = await e.client.get(f"/v2/team/app/blobs/{digest}")
    assert resp.status == 502
    assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"
    assert e.edge.cache is not None and e.edge.cache.peek(Digest.parse(digest)) is None


async def test_upstream_hung_cached_blob_served_quickly_uncached_errors_quickly(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image(layer_sizes=(64 * 1024, 32 * 1024))
    await push(docker_registry.url, "team/app", "v1", img)
    cached, uncached = img.layers
    e = await make_edge({"local": docker_registry.url}, read_timeout=1.0)
    assert await (await e.client.get(f"/v2/team/app/blobs/{cached.digest}")).read() == cached.data
    docker_registry.pause()
    t0 = time.monotonic()
    resp = await e.client.get(f"/v2/team/app/blobs/{cached.digest}")
    assert await resp.read() == cached.data
    assert time.monotonic() - t0 < 0.5
    t0 = time.monotonic()
    resp = await e.client.get(f"/v2/team/app/blobs/{uncached.digest}")
    assert resp.status == 504
    assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"
    resp = await e.client.head(f"/v2/team/app/blobs/{uncached.digest}")
    assert resp.status == 504
    assert time.monotonic() - t0 < 5.0


async def test_upstream_down_cached_blob_served_uncached_unavailable(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image(layer_sizes=(64 * 1024, 32 * 1024))
    await push(docker_registry.url, "team/app", "v1", img)
    cached, uncached = img.layers
    e = await make_edge({"local": docker_registry.url})
    assert await (await e.client.get(f"/v2/team/app/blobs/{cached.digest}")).read() == cached.data
    docker_registry.kill()
    resp = await e.client.get(f"/v2/team/app/blobs/{cached.digest}")
    assert resp.status == 200 and await resp.read() == cached.data
    t0 = time.monotonic()
    resp = await e.client.get(f"/v2/team/app/blobs/{uncached.digest}")
    assert resp.status == 502
    assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"
    assert time.monotonic() - t0 < 3.0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/team/app/blobs/uploads/"),
        ("PATCH", "/v2/team/app/blobs/uploads/abc"),
        ("PUT", "/v2/team/app/manifests/v1"),
        ("DELETE", f"/v2/team/app/blobs/{sha256(b'x')}"),
        ("DELETE", "/v2/team/app/manifests/v1"),
    ],
)
async def test_pushes_and_deletes_are_refused(
    method: str, path: str, docker_registry: DockerRegistry, make_edge: MakeEdge
) -> None:
    e = await make_edge({"local": docker_registry.url})
    resp = await e.client.request(method, path, data=b"{}")
    assert resp.status == 405
    err = (await resp.json())["errors"][0]
    assert err["code"] == "UNSUPPORTED"
    assert "read-only pull-through mirror" in err["message"]
    await _quiet(docker_registry)
    assert docker_registry.count(None, "/v2/team") == 0


async def test_base_endpoint_and_catalog(
    docker_registry: DockerRegistry, make_edge: MakeEdge
) -> None:
    e = await make_edge({"local": docker_registry.url})
    resp = await e.client.get("/v2/")
    assert resp.status == 200
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    resp = await e.client.get("/v2/_catalog")
    assert resp.status == 404
    assert (await e.client.get("/healthz")).status == 200
    text = await (await e.client.get("/metrics")).text()
    assert "quayside_edge_cache_hits" in text and "quayside_edge_fills_started" in text


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _htpasswd(path: Path, user: str, password: str) -> Path:
    out = subprocess.run(
        ["htpasswd", "-Bbn", user, password], capture_output=True, check=True, text=True
    )
    path.write_text(out.stdout)
    return path


async def test_private_upstream_cached_blob_served_only_after_upstream_auth_check(
    registry_factory, image_factory: ImageFactory, make_edge: MakeEdge, tmp_path: Path
) -> None:
    reg = registry_factory(htpasswd=_htpasswd(tmp_path / "htpasswd", "alice", "s3cret"))
    img = image_factory.image()
    alice, mallory = _basic("alice", "s3cret"), _basic("alice", "wrong")
    async with aiohttp.ClientSession(headers={"Authorization": alice}) as s:
        from harness import oci_http

        await oci_http.push_image(s, reg.url, "team/secret", "v1", img)
    layer = img.layers[0]
    upstream = UpstreamConfig(
        private=True, name="private", url=reg.url, connect_timeout=1.0, read_timeout=2.0, retries=0
    )
    e = await make_edge(upstream_configs=(upstream,))
    url = f"/v2/team/secret/blobs/{layer.digest}"

    resp = await e.client.get("/v2/")
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Basic ")
    assert (await e.client.get("/v2/", headers={"Authorization": alice})).status == 200
    resp = await e.client.get(url)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic ")
    resp = await e.client.get(url, headers={"Authorization": alice})
    assert resp.status == 200 and await resp.read() == layer.data
    # now cached: a client the upstream refuses still gets nothing
    resp = await e.client.get(url, headers={"Authorization": mallory})
    assert resp.status == 401
    resp = await e.client.get("/v2/team/secret/manifests/v1", headers={"Authorization": mallory})
    assert resp.status == 401
    # alice again: remembered check, served from cache
    resp = await e.client.get(url, headers={"Authorization": alice})
    assert resp.status == 200 and await resp.read() == layer.data
    assert e.metric("auth_checks", result="cached") == 1
    assert e.metric("cache_hits", kind="blob") == 1
    resp = await e.client.get("/v2/team/secret/manifests/v1", headers={"Authorization": alice})
    assert resp.status == 200 and await resp.read() == img.manifest


async def test_head_during_a_fill_is_answered_by_the_fill_and_gets_share_it(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    digest, data = await _pushed_layer(docker_registry, image_factory, 900 * 1024)
    docker_registry.mark_log()
    with SlowProxy(docker_registry.url, rate="2MiB") as slow:
        e = await make_edge({"local": slow.url})
        url = f"/v2/team/app/blobs/{digest}"
        first = await e.client.get(url)
        assert first.status == 200
        head = await e.client.head(url)
        assert head.status == 200 and int(head.headers["Content-Length"]) == len(data)
        second = await e.client.get(url, headers={"Range": "bytes=100-"})
        assert second.status == 206
        bodies = await asyncio.gather(first.read(), second.read())
        assert bodies == [data, data[100:]]
    await _quiet(docker_registry)
    assert docker_registry.count("HEAD", "/blobs/") == 0
    assert docker_registry.count("GET", f"/blobs/{digest}") == 1
    assert e.metric("fills_joined") == 1


async def test_http_metrics_count_registry_errors_with_their_own_status(
    docker_registry: DockerRegistry, make_edge: MakeEdge
) -> None:
    e = await make_edge({"local": docker_registry.url})
    missing = "sha256:" + "0" * 64
    assert (await e.client.get(f"/v2/team/app/blobs/{missing}")).status == 404
    assert (await e.client.get("/v2/team/app/blobs/sha256:nothex")).status == 400
    text = await (await e.client.get("/metrics")).text()
    assert 'quayside_edge_http_requests_total{method="GET",route="blob",status="404"} 1.0' in text
    assert 'quayside_edge_http_requests_total{method="GET",route="blob",status="400"} 1.0' in text
    assert 'status="500"' not in text
