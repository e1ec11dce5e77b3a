"""Clients that list only some manifest types, served from the edge's cache (issue 10 §2).

The upstream is a real docker-registry (its access log counts every request it answered);
where one upstream request must hang while another is answered, a small forwarding front
(:class:`Gate`) sits between the edge and the registry. Negotiation follows distribution's
``GetManifest``: an OCI manifest or index the client did not list is 404 MANIFEST_UNKNOWN,
a Docker manifest list asked for by tag by a client taking no lists is answered with its
linux/amd64 child.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from harness.fixtures import ImageFactory
from harness.images import Platform
from harness.registry import DockerRegistry
from regcore import mediatypes as mt
from tests.edge.conftest import OCI_ACCEPT, MakeEdge, RunningEdge, forward, push

# What older Docker engines, curl scripts and several CI tools send: image manifests only.
SINGLE = f"{mt.OCI_MANIFEST}, {mt.DOCKER_MANIFEST}"
OCI_ONLY = mt.OCI_MANIFEST


async def _quiet(reg: DockerRegistry) -> None:
    await asyncio.to_thread(reg.wait_quiet, 0.15, 5.0)


async def _get(
    e: RunningEdge, ref: str, accept: str, *, repo: str = "team/app", method: str = "GET"
) -> tuple[int, bytes, dict[str, str]]:
    resp = await e.client.request(method, f"/v2/{repo}/manifests/{ref}", headers={"Accept": accept})
    return resp.status, await resp.read(), dict(resp.headers)


def _code(body: bytes) -> str:
    return str(json.loads(body)["errors"][0]["code"])


class Gate:
    """A forwarding front for the registry whose requests matching ``hang`` (method, path
    substring) are held until :meth:`release` (at most 20 s): an upstream that answers some
    requests and goes silent on others."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.hang: set[tuple[str, str]] = set()
        self.held = 0
        self._released = asyncio.Event()

    def release(self) -> None:
        self._released.set()

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        if any(request.method == m and s in request.path for m, s in self.hang):
            self.held += 1
            try:
                await asyncio.wait_for(self._released.wait(), 20)
            except TimeoutError:
                pass
        return await forward(request, self.upstream_url)


@pytest.fixture
async def gate(aiohttp_server: Any) -> Callable[[str], Awaitable[tuple[str, Gate]]]:
    gates: list[Gate] = []

    async def start(upstream_url: str) -> tuple[str, Gate]:
        g = Gate(upstream_url)
        gates.append(g)
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", g.handle)
        server = await aiohttp_server(app)
        return f"http://127.0.0.1:{server.port}", g

    yield start
    for g in gates:
        g.release()


# -- served from cache -------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", ["oci", "docker"])
async def test_single_type_client_served_from_cache_on_the_second_pull(
    flavour: str,
    docker_registry: DockerRegistry,
    image_factory: ImageFactory,
    make_edge: MakeEdge,
) -> None:
    img = image_factory.image(flavour=flavour)  # type: ignore[arg-type]
    await push(docker_registry.url, "team/app", "v1", img)
    docker_registry.mark_log()
    e = await make_edge({"local": docker_registry.url})
    for _ in range(3):
        status, body, headers = await _get(e, "v1", SINGLE)
        assert status == 200, body
        assert body == img.manifest
        assert headers["Docker-Content-Digest"] == img.digest
        assert headers["Content-Type"] == img.media_type
        status, _, headers = await _get(e, "v1", SINGLE, method="HEAD")
        assert status == 200 and int(headers["Content-Length"]) == len(img.manifest)
    status, body, _ = await _get(e, img.digest, SINGLE)
    assert (status, body) == (200, img.manifest)
    await _quiet(docker_registry)
    # the first pull fetched it (with every type asked for); everything else came from cache
    assert docker_registry.count("GET", "/manifests/") == 1
    assert docker_registry.count(None, "/manifests/") == 1
    assert e.metric("tag_cache", result="hit") == 5
    # and a client listing every type is served the same record, no upstream request either
    status, body, _ = await _get(e, "v1", OCI_ACCEPT)
    assert (status, body) == (200, img.manifest)
    await _quiet(docker_registry)
    assert docker_registry.count(None, "/manifests/") == 1


async def test_oci_index_to_a_client_taking_no_lists_is_manifest_unknown_from_cache(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    index = image_factory.index(flavour="oci")
    await push(docker_registry.url, "team/app", "multi", index)
    docker_registry.mark_log()
    e = await make_edge({"local": docker_registry.url})
    for ref in ("multi", index.digest, "multi"):
        for method in ("GET", "HEAD"):
            status, body, _ = await _get(e, ref, SINGLE, method=method)
            assert status == 404
            if method == "GET":
                assert _code(body) == "MANIFEST_UNKNOWN"
                assert b"OCI index found, but accept header does not support OCI indexes" in body
    # the refusal is the edge's own: the index was fetched once (full Accept) and recorded
    status, body, headers = await _get(e, "multi", OCI_ACCEPT)
    assert (status, body) == (200, index.manifest)
    assert headers["Content-Type"] == mt.OCI_INDEX
    await _quiet(docker_registry)
    assert docker_registry.count("GET", "/manifests/") == 1
    assert docker_registry.count(None, "/manifests/") == 1
    # an OCI index is never narrowed, even for a client that lists every image manifest type
    status, body, _ = await _get(e, "multi", f"{SINGLE}, {mt.DOCKER_MANIFEST_LIST}")
    assert status == 404 and _code(body) == "MANIFEST_UNKNOWN"


async def test_docker_list_by_tag_is_its_linux_amd64_child_for_a_client_taking_no_lists(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    platforms = (Platform("linux", "arm64", "v8"), Platform("linux", "amd64"))
    index = image_factory.index(flavour="docker", platforms=platforms)
    amd64 = next(i for i in index.images if i.platform.architecture == "amd64")
    await push(docker_registry.url, "team/app", "multi", index)
    docker_registry.mark_log()
    e = await make_edge({"local": docker_registry.url})
    for _ in range(2):
        status, body, headers = await _get(e, "multi", SINGLE)
        assert status == 200, body
        assert body == amd64.manifest
        assert headers["Docker-Content-Digest"] == amd64.digest
        assert headers["Content-Type"] == mt.DOCKER_MANIFEST
        status, _, headers = await _get(e, "multi", mt.DOCKER_MANIFEST, method="HEAD")
        assert status == 200
        assert headers["Docker-Content-Digest"] == amd64.digest
        assert int(headers["Content-Length"]) == len(amd64.manifest)
    # by digest a list is served as it is (distribution narrows by tag only)
    status, body, headers = await _get(e, index.digest, SINGLE)
    assert (status, body, headers["Content-Type"]) == (200, index.manifest, index.media_type)
    # a client listing lists gets the list by tag
    status, body, _ = await _get(e, "multi", OCI_ACCEPT)
    assert (status, body) == (200, index.manifest)
    await _quiet(docker_registry)
    assert docker_registry.count("GET", "/manifests/multi") == 1
    assert docker_registry.count("GET", f"/manifests/{amd64.digest}") == 1
    assert docker_registry.count(None, "/manifests/") == 2
    # schema 2 child to a client that does not list schema 2: distribution's MANIFEST_INVALID
    status, body, _ = await _get(e, "multi", OCI_ONLY)
    assert status == 400 and _code(body) == "MANIFEST_INVALID"
    assert b"Schema 2 manifest not supported by client" in body


async def test_docker_list_without_linux_amd64_is_manifest_unknown_for_a_client_taking_no_lists(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    index = image_factory.index(
        flavour="docker", platforms=(Platform("linux", "arm64", "v8"), Platform("windows", "amd64"))
    )
    await push(docker_registry.url, "team/app", "arm", index)
    e = await make_edge({"local": docker_registry.url})
    status, body, _ = await _get(e, "arm", SINGLE)
    assert status == 404 and _code(body) == "MANIFEST_UNKNOWN"
    status, body, _ = await _get(e, "arm", OCI_ACCEPT)
    assert (status, body) == (200, index.manifest)


async def test_oci_manifest_to_docker_only_client_is_refused_docker_manifest_to_oci_client_served(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    oci, docker = image_factory.image(), image_factory.image(flavour="docker")
    await push(docker_registry.url, "team/app", "oci", oci)
    await push(docker_registry.url, "team/app", "docker", docker)
    e = await make_edge({"local": docker_registry.url})
    status, body, _ = await _get(e, "oci", mt.DOCKER_MANIFEST)
    assert status == 404 and _code(body) == "MANIFEST_UNKNOWN"
    assert b"OCI manifest found, but accept header does not support OCI manifests" in body
    status, body, _ = await _get(e, "docker", OCI_ONLY)  # distribution serves schema 2 to anyone
    assert (status, body) == (200, docker.manifest)


# -- stale on failure, bounded waits ------------------------------------------------------------
async def test_single_type_client_gets_last_known_tag_while_upstream_hangs(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image(flavour="docker")
    index = image_factory.index(flavour="docker")
    amd64 = next(i for i in index.images if i.platform.architecture == "amd64")
    await push(docker_registry.url, "team/app", "v1", img)
    await push(docker_registry.url, "team/app", "multi", index)
    e = await make_edge(
        {"local": docker_registry.url}, tag_ttl=5, revalidate_timeout=0.5, read_timeout=2.0
    )
    assert (await _get(e, "v1", SINGLE))[0] == 200
    assert (await _get(e, "multi", SINGLE))[0] == 200
    docker_registry.pause()
    try:
        e.clock.advance(10)
        for ref, want in (("v1", img), ("multi", amd64)):
            for method in ("GET", "HEAD"):
                t0 = time.monotonic()
                status, body, headers = await _get(e, ref, SINGLE, method=method)
                assert status == 200, body
                assert headers["Docker-Content-Digest"] == want.digest
                assert method == "HEAD" or body == want.manifest
                assert time.monotonic() - t0 < 1.5
        assert e.metric("stale_serves", upstream="local") == 4
    finally:
        docker_registry.resume()


async def test_request_passed_through_to_a_hung_upstream_is_bounded_by_its_timeouts(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image()
    await push(docker_registry.url, "team/app", "v1", img)
    e = await make_edge({"local": docker_registry.url}, connect_timeout=1.0, read_timeout=1.5)
    docker_registry.pause()
    try:
        for ref in ("v1", img.digest):
            for method in ("GET", "HEAD"):
                t0 = time.monotonic()
                status, body, _ = await _get(e, ref, SINGLE, method=method)
                took = time.monotonic() - t0
                assert status == 504, body
                assert method == "HEAD" or _code(body) == "UNAVAILABLE"
                assert took < 2.5 + 0.5, f"{method} {ref}: {took:.2f}s"
    finally:
        docker_registry.resume()


async def test_changed_tag_whose_new_manifest_hangs_serves_last_known_within_the_budget(
    docker_registry: DockerRegistry,
    image_factory: ImageFactory,
    make_edge: MakeEdge,
    gate: Callable[[str], Awaitable[tuple[str, Gate]]],
) -> None:
    first, second = image_factory.image(), image_factory.image()
    await push(docker_registry.url, "team/app", "v1", first)
    url, g = await gate(docker_registry.url)
    e = await make_edge(
        {"local": url}, tag_ttl=5, revalidate_timeout=1.0, connect_timeout=1.0, read_timeout=1.5
    )
    assert (await _get(e, "v1", SINGLE))[1] == first.manifest
    await push(docker_registry.url, "team/app", "v1", second)
    g.hang.add(("GET", f"/manifests/{second.digest}"))  # HEAD answers, the new GET is silent
    e.clock.advance(10)
    t0 = time.monotonic()
    status, body, headers = await _get(e, "v1", SINGLE)
    took = time.monotonic() - t0
    assert status == 200, body
    assert (body, headers["Docker-Content-Digest"]) == (first.manifest, first.digest)
    assert took < 2.5 + 0.5, f"{took:.2f}s"
    assert g.held == 1
    assert e.metric("stale_serves", upstream="local") == 1
    g.release()
    g.hang.clear()
    status, body, _ = await _get(e, "v1", SINGLE)  # upstream answers again: the new manifest
    assert (status, body) == (200, second.manifest)


async def test_list_and_its_child_share_one_budget_on_a_silent_upstream(
    docker_registry: DockerRegistry,
    image_factory: ImageFactory,
    make_edge: MakeEdge,
    gate: Callable[[str], Awaitable[tuple[str, Gate]]],
) -> None:
    index = image_factory.index(flavour="docker")
    amd64 = next(i for i in index.images if i.platform.architecture == "amd64")
    await push(docker_registry.url, "team/app", "multi", index)
    url, g = await gate(docker_registry.url)
    g.hang.add(("GET", f"/manifests/{amd64.digest}"))
    e = await make_edge({"local": url}, connect_timeout=1.0, read_timeout=1.5)
    t0 = time.monotonic()
    status, body, _ = await _get(e, "multi", SINGLE)
    took = time.monotonic() - t0
    assert status == 504 and _code(body) == "UNAVAILABLE"
    assert took < 2.5 + 0.5, f"{took:.2f}s"
    g.release()
    g.hang.clear()
    status, body, headers = await _get(e, "multi", SINGLE)
    assert (status, body, headers["Docker-Content-Digest"]) == (200, amd64.manifest, amd64.digest)
