"""Manifests through the edge against a real docker-registry upstream (its access log counts
every upstream request)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from pathlib import Path

import aiohttp

from edge.manifeststore import ManifestMemory
from edge.upstreamconfig import UpstreamConfig
from harness import oci_http
from harness.fixtures import ImageFactory
from harness.images import Image
from harness.registry import DockerRegistry
from tests.edge.conftest import OCI_ACCEPT, MakeEdge, push

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"


async def _quiet(reg: DockerRegistry) -> None:
    await asyncio.to_thread(reg.wait_quiet, 0.15, 5.0)


async def test_manifest_by_tag_is_upstream_bytes_and_type(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image()
    await push(docker_registry.url, "team/app", "v1", img)
    e = await make_edge({"local": docker_registry.url})
    resp = await e.client.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_ACCEPT})
    body = await resp.read()
    assert resp.status == 200, body
    assert body == img.manifest
    assert resp.headers["Content-Type"] == img.media_type
    assert resp.headers["Docker-Content-Digest"] == img.digest
    assert resp.headers["ETag"] == f'"{img.digest}"'
    assert int(resp.headers["Content-Length"]) == len(img.manifest)


async def test_docker_manifest_list_kept_verbatim_by_digest_and_served_from_cache(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    index = image_factory.index(flavour="docker")
    await push(docker_registry.url, "team/multi", "v1", index)
    e = await make_edge({"local": docker_registry.url})
    for _ in range(2):
        resp = await e.client.get(
            f"/v2/team/multi/manifests/{index.digest}", headers={"Accept": OCI_ACCEPT}
        )
        assert resp.status == 200
        assert await resp.read() == index.manifest
        assert resp.headers["Content-Type"] == index.media_type
    await _quiet(docker_registry)
    assert docker_registry.count("GET", f"/manifests/{index.digest}") == 1
    assert e.metric("cache_hits", kind="manifest") == 1


async def test_head_by_tag_never_gets_upstream(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image()
    await push(docker_registry.url, "team/app", "v1", img)
    docker_registry.mark_log()
    e = await make_edge({"local": docker_registry.url})
    resp = await e.client.head("/v2/team/app/manifests/v1", headers={"Accept": OCI_ACCEPT})
    assert resp.status == 200
    assert resp.headers["Docker-Content-Digest"] == img.digest
    assert int(resp.headers["Content-Length"]) == len(img.manifest)
    assert resp.headers["Content-Type"] == img.media_type
    resp = await e.client.head(f"/v2/team/app/manifests/{img.digest}")
    assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(img.manifest)
    await _quiet(docker_registry)
    assert docker_registry.count("GET", "/manifests/") == 0
    assert docker_registry.count("HEAD", "/manifests/") == 2


async def test_tag_ttl_no_upstream_within_ttl_then_head_only_then_get_on_change(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    first, second = image_factory.image(), image_factory.image()
    await push(docker_registry.url, "team/app", "stable", first)
    docker_registry.mark_log()
    e = await make_edge({"local": docker_registry.url}, tag_ttl=30)

    async def get() -> bytes:
        resp = await e.client.get("/v2/team/app/manifests/stable", headers={"Accept": OCI_ACCEPT})
        assert resp.status == 200
        return await resp.read()

    assert await get() == first.manifest
    await _quiet(docker_registry)
    assert docker_registry.count(None, "/manifests/") == 1
    docker_registry.mark_log()
    e.clock.advance(10)
    assert await get() == first.manifest  # within TTL: no upstream request at all
    await _quiet(docker_registry)
    assert docker_registry.count(None, "") == 0
    assert e.metric("tag_cache", result="hit") == 1

    e.clock.advance(25)  # past the TTL, same digest: one HEAD, no GET
    assert await get() == first.manifest
    await _quiet(docker_registry)
    assert docker_registry.count("HEAD", "/manifests/stable") == 1
    assert docker_registry.count("GET", "/manifests/") == 0
    assert e.metric("tag_cache", result="revalidated") == 1

    await push(docker_registry.url, "team/app", "stable", second)
    docker_registry.mark_log()
    e.clock.advance(31)  # past the TTL, tag moved: HEAD then GET of the new digest
    assert await get() == second.manifest
    await _quiet(docker_registry)
    assert docker_registry.count("HEAD", "/manifests/stable") == 1
    assert docker_registry.count("GET", f"/manifests/{second.digest}") == 1
    assert e.metric("tag_cache", result="changed") == 1


async def test_concurrent_misses_and_revalidations_of_a_tag_share_one_upstream_request(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image()
    await push(docker_registry.url, "team/app", "herd", img)
    docker_registry.mark_log()
    e = await make_edge({"local": docker_registry.url}, tag_ttl=30)

    async def herd() -> None:
        docker_registry.pause()  # every request reaches the edge before upstream answers one
        try:
            gets = [
                asyncio.ensure_future(
                    e.client.get("/v2/team/app/manifests/herd", headers={"Accept": OCI_ACCEPT})
                )
                for _ in range(8)
            ]
            await asyncio.sleep(0.3)
        finally:
            docker_registry.resume()
        for resp in await asyncio.gather(*gets):
            assert resp.status == 200
            assert await resp.read() == img.manifest

    await herd()  # cold: one upstream GET for all eight
    await _quiet(docker_registry)
    assert docker_registry.count("GET", "/manifests/herd") == 1
    assert docker_registry.count(None, "/manifests/") == 1
    docker_registry.mark_log()
    e.clock.advance(31)
    await herd()  # stale: one upstream HEAD for all eight
    await _quiet(docker_registry)
    assert docker_registry.count("HEAD", "/manifests/herd") == 1
    assert docker_registry.count(None, "/manifests/") == 1
    assert e.metric("tag_cache", result="revalidated") == 8


async def test_oci_manifest_not_served_to_client_that_did_not_accept_it(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    oci, docker = image_factory.image(), image_factory.image(flavour="docker")
    await push(docker_registry.url, "team/app", "oci", oci)
    await push(docker_registry.url, "team/app", "docker", docker)
    e = await make_edge({"local": docker_registry.url})
    # cache the OCI manifest first with a client that accepts everything
    assert (
        await e.client.get("/v2/team/app/manifests/oci", headers={"Accept": OCI_ACCEPT})
    ).status == 200
    for ref in ("oci", oci.digest):
        resp = await e.client.get(f"/v2/team/app/manifests/{ref}", headers={"Accept": DOCKER_V2})
        assert resp.status == 404
        assert (await resp.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    resp = await e.client.get("/v2/team/app/manifests/docker", headers={"Accept": DOCKER_V2})
    assert resp.status == 200
    assert await resp.read() == docker.manifest
    assert resp.headers["Content-Type"] == DOCKER_V2


async def test_unknown_tag_is_manifest_unknown(
    docker_registry: DockerRegistry, make_edge: MakeEdge
) -> None:
    e = await make_edge({"local": docker_registry.url})
    resp = await e.client.get("/v2/team/none/manifests/latest")
    assert resp.status == 404
    assert (await resp.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"


async def test_upstream_hung_last_known_tag_served_quickly_uncached_errors_quickly(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image()
    await push(docker_registry.url, "team/app", "v1", img)
    e = await make_edge(
        {"local": docker_registry.url}, tag_ttl=5, revalidate_timeout=0.5, read_timeout=1.0
    )
    assert (await e.client.get("/v2/team/app/manifests/v1")).status == 200
    docker_registry.pause()
    e.clock.advance(10)
    t0 = time.monotonic()
    resp = await e.client.get("/v2/team/app/manifests/v1")
    assert resp.status == 200
    assert await resp.read() == img.manifest
    assert time.monotonic() - t0 < 1.5
    assert e.metric("stale_serves", upstream="local") == 1

    t0 = time.monotonic()
    resp = await e.client.get("/v2/team/app/manifests/other")
    assert resp.status == 504
    assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"
    assert time.monotonic() - t0 < 3.5


async def test_upstream_down_last_known_tag_served_uncached_is_unavailable(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image()
    await push(docker_registry.url, "team/app", "v1", img)
    e = await make_edge({"local": docker_registry.url}, tag_ttl=5)
    assert (await e.client.get("/v2/team/app/manifests/v1")).status == 200
    docker_registry.kill()
    e.clock.advance(10)
    resp = await e.client.get("/v2/team/app/manifests/v1")
    assert resp.status == 200
    assert resp.headers["Docker-Content-Digest"] == img.digest
    resp = await e.client.head("/v2/team/app/manifests/v1")
    assert resp.status == 200
    assert e.metric("stale_serves", upstream="local") == 2
    t0 = time.monotonic()
    resp = await e.client.get("/v2/team/app/manifests/v2")
    assert resp.status == 502
    assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"
    assert time.monotonic() - t0 < 3.0
    # a manifest by digest is immutable: served from cache whatever upstream says
    resp = await e.client.get(f"/v2/team/app/manifests/{img.digest}")
    assert resp.status == 200 and await resp.read() == img.manifest


async def test_tags_list_and_referrers_pass_through(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image()
    for tag in ("a", "b", "c"):
        await push(docker_registry.url, "team/app", tag, img)
    e = await make_edge({"local": docker_registry.url})
    resp = await e.client.get("/v2/team/app/tags/list")
    assert resp.status == 200
    doc = json.loads(await resp.read())
    assert doc["name"] == "team/app" and sorted(doc["tags"]) == ["a", "b", "c"]
    # registry 2.8 ignores n/last for tags; check they are forwarded
    resp = await e.client.get("/v2/team/app/tags/list?n=2&last=a&other=x")
    assert resp.status == 200
    await _quiet(docker_registry)
    queries = [r.query for r in docker_registry.access_log() if r.path.endswith("/tags/list")]
    assert sorted(queries[-1].split("&")) == ["last=a", "n=2"]
    resp = await e.client.get("/v2/team/none/tags/list")
    assert resp.status == 404
    # registry 2.8 has no referrers API: its 404 is passed on as an OCI error
    resp = await e.client.get(f"/v2/team/app/referrers/{img.digest}")
    assert resp.status == 404


async def test_ns_selects_upstream_and_is_echoed_unknown_ns_refused(
    registry_factory, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    a, b = registry_factory(), registry_factory()
    img = image_factory.image()
    await push(b.url, "team/app", "v1", img)
    e = await make_edge({"a": a.url, "b": b.url})
    resp = await e.client.get(
        f"/v2/team/app/manifests/v1?ns={b.host}", headers={"Accept": OCI_ACCEPT}
    )
    assert resp.status == 200
    assert resp.headers["OCI-Namespace"] == b.host
    assert await resp.read() == img.manifest
    resp = await e.client.get("/v2/team/app/manifests/v1?ns=evil.example.com")
    assert resp.status == 404
    err = (await resp.json())["errors"][0]
    assert err["code"] == "NAME_UNKNOWN" and "evil.example.com" in err["message"]
    # path prefix selects b as well
    resp = await e.client.get("/v2/b/team/app/manifests/v1", headers={"Accept": OCI_ACCEPT})
    assert resp.status == 200 and await resp.read() == img.manifest
    await asyncio.to_thread(a.wait_quiet, 0.15, 5.0)
    assert a.count(None, "/manifests/") == 0


async def test_upstream_429_last_known_tag_served_uncached_gets_429(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge, rate_limiter
) -> None:
    img = image_factory.image()
    await push(docker_registry.url, "team/app", "v1", img)
    url, limiter = await rate_limiter(docker_registry.url)
    e = await make_edge({"hub": url}, tag_ttl=5)
    assert (await e.client.get("/v2/team/app/manifests/v1")).status == 200
    limiter.limited = True
    e.clock.advance(10)
    resp = await e.client.get("/v2/team/app/manifests/v1")
    assert resp.status == 200 and await resp.read() == img.manifest
    assert e.metric("stale_serves", upstream="hub") == 1
    resp = await e.client.get("/v2/team/app/manifests/v2")
    assert resp.status == 429
    assert (await resp.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
    resp = await e.client.get(f"/v2/team/app/blobs/{img.layers[0].digest}")
    assert resp.status == 429
    assert limiter.refused == 3


async def test_docker_hub_upstream_maps_one_segment_names_to_library(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    from edge.upstreamconfig import UpstreamConfig

    img = image_factory.image()
    await push(docker_registry.url, "library/alpine", "3", img)
    hub = UpstreamConfig(
        name="docker.io", url=docker_registry.url, docker_hub=True, read_timeout=2.0
    )
    e = await make_edge(upstream_configs=(hub,))
    for path in (
        "/v2/alpine/manifests/3",
        "/v2/library/alpine/manifests/3",
        "/v2/alpine/manifests/3?ns=docker.io",
    ):
        resp = await e.client.get(path, headers={"Accept": OCI_ACCEPT})
        assert resp.status == 200, path
        assert await resp.read() == img.manifest
    resp = await e.client.get(f"/v2/alpine/blobs/{img.layers[0].digest}")
    assert resp.status == 200 and await resp.read() == img.layers[0].data


async def test_tag_cache_shared_through_redis_saves_the_second_edge_its_revalidation(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge, redis_server
) -> None:
    img = image_factory.image()
    await push(docker_registry.url, "team/app", "v1", img)
    a = await make_edge({"local": docker_registry.url}, redis_url=redis_server.url)
    b = await make_edge({"local": docker_registry.url}, redis_url=redis_server.url)
    b.clock.now = a.clock.now
    assert (await a.client.get("/v2/team/app/manifests/v1")).status == 200
    await _quiet(docker_registry)
    docker_registry.mark_log()
    resp = await b.client.get("/v2/team/app/manifests/v1")
    assert resp.status == 200 and await resp.read() == img.manifest
    await _quiet(docker_registry)
    # b knew the digest from Redis: no tag request upstream, only the manifest by digest
    assert docker_registry.count(None, "/manifests/v1") == 0
    assert docker_registry.count("GET", f"/manifests/{img.digest}") == 1
    assert b.metric("tag_cache", result="hit") == 1


async def test_redis_killed_tag_cache_falls_back_to_local_copy(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge, redis_server
) -> None:
    img = image_factory.image()
    await push(docker_registry.url, "team/app", "v1", img)
    e = await make_edge({"local": docker_registry.url}, redis_url=redis_server.url)
    assert (await e.client.get("/v2/team/app/manifests/v1")).status == 200
    await _quiet(docker_registry)
    docker_registry.mark_log()
    redis_server.kill()
    t0 = time.monotonic()
    for _ in range(3):
        resp = await e.client.get("/v2/team/app/manifests/v1")
        assert resp.status == 200 and await resp.read() == img.manifest
    assert time.monotonic() - t0 < 2.0
    await _quiet(docker_registry)
    assert docker_registry.count(None, "/manifests/") == 0
    assert e.metric("tag_cache", result="shared_error") == 1  # then Redis is skipped a while


# -- in-memory manifests ------------------------------------------------------------------------
async def test_second_get_by_tag_within_ttl_is_served_from_memory_not_disk(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image()
    await push(docker_registry.url, "team/app", "v1", img)
    e = await make_edge({"local": docker_registry.url}, tag_ttl=30)
    resp = await e.client.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_ACCEPT})
    assert resp.status == 200 and await resp.read() == img.manifest
    await _quiet(docker_registry)
    docker_registry.mark_log()
    # The on-disk copy goes away: only memory can answer without asking upstream.
    await e.edge.manifests.store.disk.delete(img.digest)
    e.clock.advance(10)
    for _ in range(3):
        resp = await e.client.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_ACCEPT})
        assert resp.status == 200
        assert await resp.read() == img.manifest
        assert resp.headers["Content-Type"] == img.media_type
        assert resp.headers["Docker-Content-Digest"] == img.digest
        assert int(resp.headers["Content-Length"]) == len(img.manifest)
    resp = await e.client.head(f"/v2/team/app/manifests/{img.digest}")
    assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(img.manifest)
    await _quiet(docker_registry)
    assert docker_registry.count(None, "") == 0
    assert e.metric("tag_cache", result="hit") == 3
    assert e.metric("manifest_reads", source="memory") == 3
    assert e.metric("manifest_reads", source="disk") == 0
    assert e.metric("manifest_memory_bytes") == len(img.manifest)


async def test_manifest_memory_bound_evicts_lru_and_disk_still_answers(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    images = [image_factory.image() for _ in range(3)]
    for i, img in enumerate(images):
        await push(docker_registry.url, "team/app", f"v{i}", img)
    e = await make_edge({"local": docker_registry.url})
    store = e.edge.manifests.store
    sizes = [len(img.manifest) for img in images]
    bound = sizes[1] + sizes[2]  # room for the last two only
    store.memory = ManifestMemory(bound)

    async def get(img: Image) -> None:
        resp = await e.client.get(
            f"/v2/team/app/manifests/{img.digest}", headers={"Accept": OCI_ACCEPT}
        )
        assert resp.status == 200
        assert await resp.read() == img.manifest
        assert resp.headers["Content-Type"] == img.media_type

    for img in images:
        await get(img)
        assert store.memory.bytes_used <= bound
    assert images[0].digest not in store.memory  # least recently used: evicted
    assert images[1].digest in store.memory and images[2].digest in store.memory
    await _quiet(docker_registry)
    docker_registry.mark_log()
    await get(images[0])  # from disk (once), then remembered again
    await get(images[0])
    await _quiet(docker_registry)
    assert docker_registry.count(None, "") == 0
    assert e.metric("manifest_reads", source="disk") == 1
    assert e.metric("manifest_reads", source="memory") == 1
    assert store.memory.bytes_used <= bound
    assert images[1].digest not in store.memory  # now the least recently used


def test_manifest_memory_is_an_lru_bounded_by_bytes() -> None:
    mem = ManifestMemory(100)
    mem.put("a", b"x" * 40, "t/a")
    mem.put("b", b"y" * 40, "t/b")
    assert mem.get("a") == (b"x" * 40, "t/a")  # a is now the most recent
    mem.put("c", b"z" * 40, "t/c")  # evicts b
    assert "b" not in mem and mem.get("a") is not None and mem.get("c") is not None
    assert mem.bytes_used == 80 and len(mem) == 2
    mem.put("big", b"w" * 101, "t/big")  # larger than the bound: not stored, nothing evicted
    assert "big" not in mem and len(mem) == 2
    mem.put("d", b"v" * 100, "t/d")  # exactly the bound: everything else goes
    assert len(mem) == 1 and mem.bytes_used == 100
    mem.put("d", b"v" * 100, "t/d")  # same digest again: counted once
    assert mem.bytes_used == 100
    assert ManifestMemory(0).get("x") is None


async def test_http_metrics_count_every_request_by_route_and_status(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image()
    await push(docker_registry.url, "team/app", "v1", img)
    e = await make_edge({"local": docker_registry.url})
    for _ in range(5):
        resp = await e.client.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_ACCEPT})
        assert resp.status == 200 and await resp.read() == img.manifest
    for _ in range(2):
        assert (await e.client.head("/v2/team/app/manifests/v1")).status == 200

    def http(name: str, **labels: str) -> float:
        return e.metric(f"http_{name}", **labels)

    assert http("requests", method="GET", route="manifest", status="200") == 5
    assert http("requests", method="HEAD", route="manifest", status="200") == 2
    assert http("request_duration_seconds_count", route="manifest") == 7
    assert http("requests_in_flight") == 0
    assert e.metric("bytes_served", source="cache") == 5 * len(img.manifest)

    docker_registry.pause()  # an uncached tag now hangs upstream: one request stays in flight
    try:
        pending = asyncio.ensure_future(e.client.get("/v2/team/app/manifests/other"))
        for _ in range(200):  # bounded: up to ~2 s for the request to reach the handler
            if http("requests_in_flight"):
                break
            await asyncio.sleep(0.01)
        assert http("requests_in_flight") == 1
        assert (await pending).status == 504
    finally:
        docker_registry.resume()
    assert http("requests_in_flight") == 0


def _htpasswd(path: Path, user: str, password: str) -> Path:
    out = subprocess.run(
        ["htpasswd", "-Bbn", user, password], capture_output=True, check=True, text=True
    )
    path.write_text(out.stdout)
    return path


async def test_private_manifest_in_memory_still_needs_the_upstream_access_check(
    registry_factory, image_factory: ImageFactory, make_edge: MakeEdge, tmp_path: Path
) -> None:
    reg = registry_factory(htpasswd=_htpasswd(tmp_path / "htpasswd", "alice", "s3cret"))

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    alice, mallory = basic("alice", "s3cret"), basic("alice", "wrong")
    img = image_factory.image()
    async with aiohttp.ClientSession(headers={"Authorization": alice}) as s:
        await oci_http.push_image(s, reg.url, "team/secret", "v1", img)
    upstream = UpstreamConfig(
        private=True, name="private", url=reg.url, connect_timeout=1.0, read_timeout=2.0, retries=0
    )
    e = await make_edge(upstream_configs=(upstream,))
    refs = ("v1", img.digest)
    for ref in refs:  # alice: fetched once, then in memory
        resp = await e.client.get(
            f"/v2/team/secret/manifests/{ref}",
            headers={"Authorization": alice, "Accept": OCI_ACCEPT},
        )
        assert resp.status == 200 and await resp.read() == img.manifest
    assert img.digest in e.edge.manifests.store.memory
    for ref in refs:
        for headers in ({"Authorization": mallory}, {}):
            resp = await e.client.get(f"/v2/team/secret/manifests/{ref}", headers=headers)
            assert resp.status == 401, (ref, headers)
            assert img.manifest not in await resp.read()
    assert e.metric("manifest_reads", source="memory") == 1  # alice's GET by digest only
