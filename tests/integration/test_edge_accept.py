"""A real edge process and a client that lists only the single-image manifest types (what
older Docker engines, curl scripts and several CI tools send), against a real docker-registry
that is then frozen (SIGSTOP): served from cache, the last known tag served through the
outage, and a request that must go upstream answered 504 within connect + read timeout."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from harness import oci_http
from harness.fixtures import ImageFactory
from harness.registry import DockerRegistry
from harness.servers import ServerGroup
from regcore import mediatypes as mt

pytestmark = pytest.mark.slow

SINGLE = f"{mt.OCI_MANIFEST}, {mt.DOCKER_MANIFEST}"
CONNECT, READ = 1.0, 1.5


async def _get(
    session: aiohttp.ClientSession, url: str
) -> tuple[int, bytes, dict[str, str], float]:
    t0 = time.monotonic()
    async with session.get(url, headers={"Accept": SINGLE}) as resp:
        body = await resp.read()
        return resp.status, body, dict(resp.headers), time.monotonic() - t0


async def test_single_type_client_served_from_cache_through_an_upstream_outage(
    docker_registry: DockerRegistry, servers: ServerGroup, image_factory: ImageFactory
) -> None:
    image = image_factory.image(flavour="docker")
    index = image_factory.index(flavour="docker")
    amd64 = next(i for i in index.images if i.platform.architecture == "amd64")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await oci_http.push_image(session, docker_registry.url, "team/ci", "1.0", image)
        await oci_http.push_image(session, docker_registry.url, "team/ci", "multi", index)
        config = {
            "upstreams": {
                "reg": {
                    "url": docker_registry.url,
                    "timeouts": {"connect": CONNECT, "read": READ},
                    "retries": 1,
                }
            },
            "tags": {"revalidate_timeout": 1},
        }
        edge = servers.edge([], config=config, tag_ttl=1)
        base = f"{edge.url}/v2/team/ci/manifests"
        docker_registry.mark_log()
        for _ in range(3):
            status, body, headers, _ = await _get(session, f"{base}/1.0")
            assert (status, body) == (200, image.manifest)
            status, body, headers, _ = await _get(session, f"{base}/multi")
            assert (status, body) == (200, amd64.manifest)
            assert headers["Docker-Content-Digest"] == amd64.digest
        await asyncio.to_thread(docker_registry.wait_quiet, 0.2, 5.0)
        # one GET per manifest (1.0, the list, its linux/amd64 child); the rest from cache
        assert docker_registry.count("GET", "/manifests/") == 3
        assert docker_registry.count(None, "/manifests/") == 3

        await asyncio.sleep(1.2)  # both tags are now due for revalidation
        docker_registry.pause()
        try:
            for tag, want in (("1.0", image), ("multi", amd64)):
                status, body, headers, took = await _get(session, f"{base}/{tag}")
                assert (status, body) == (200, want.manifest)
                assert took < 2.0, f"last known {tag} took {took:.2f}s"
            samples = edge.metrics()
            tags = {k[1]: v for k, v in samples.items() if k[0] == "quayside_edge_tag_cache_total"}
            assert edge.metric("quayside_edge_stale_serves", samples) == 2, tags
            status, body, _, took = await _get(session, f"{base}/never-pulled")
            print(f"uncached tag on a frozen upstream: {status} in {took:.2f}s")
            assert status == 504, body
            assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
            assert took < CONNECT + READ + 1.0, f"uncached tag took {took:.2f}s"
        finally:
            docker_registry.resume()
