"""containerd (``ctr images pull`` with a ``certs.d/<upstream>/hosts.toml`` mirror) pulls through
the edge.

containerd appends ``?ns=127.0.0.1%3AUPSTREAM`` to every request it sends to the mirror. The
edge is configured with two upstreams and the registry holding the image is *not* the default,
so the pull only works if ``ns`` is mapped to the upstream whose URL is that host. What proves
the edge served it: the upstream's access log holds no request from containerd itself (user
agent ``containerd/...``: it falls back to the upstream when the mirror fails), each blob was fetched upstream once, the default upstream saw nothing, and
a second pull after ``ctr images rm --sync`` (content store emptied) fetches no blob upstream.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import containerd as containerd_mod
from harness import skopeo
from harness.containerd import Containerd
from harness.fixtures import ImageFactory
from harness.images import KiB, MiB
from harness.registry import DockerRegistry
from harness.servers import ServerGroup

pytestmark = pytest.mark.slow


@functools.cache
def _containerd_unavailable() -> str | None:
    return containerd_mod.unavailable_reason()


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Containerd]:
    reason = _containerd_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with Containerd(tmp_path / "containerd") as daemon:
        yield daemon


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerGroup]:
    group = ServerGroup(tmp_path / "servers")
    try:
        yield group
    finally:
        print(group.log_tails())
        group.close()


def _client_requests(registry: DockerRegistry) -> list[str]:
    """Upstream requests that came straight from containerd (a fallback past the mirror)."""
    return [
        f"{r.method} {r.target} {r.agent}"
        for r in registry.access_log()
        if r.agent.startswith("containerd/")
    ]


def test_containerd_pulls_directly_from_docker_registry(
    containerd: Containerd,
    docker_registry: DockerRegistry,
    image_factory: ImageFactory,
    tmp_path: Path,
) -> None:
    """Baseline without the edge: the private containerd works against the upstream itself."""
    image = image_factory.image(layer_sizes=(1 * MiB,))
    skopeo.push(image, docker_registry.host, "team/direct", "1.0", workdir=tmp_path)
    ref = f"{docker_registry.host}/team/direct:1.0"
    containerd.pull(ref)
    assert containerd.image_digest(ref) == image.digest
    assert set(image.blobs()) <= containerd.content_digests()
    docker_registry.wait_quiet()
    assert len(_client_requests(docker_registry)) >= len(image.blobs())


def test_containerd_pulls_through_edge_mirror_selected_by_ns(
    containerd: Containerd,
    docker_registry: DockerRegistry,
    registry_factory: Callable[..., DockerRegistry],
    servers: ServerGroup,
    image_factory: ImageFactory,
    tmp_path: Path,
) -> None:
    default = registry_factory()
    image = image_factory.image(layer_sizes=(3 * MiB, 256 * KiB))
    skopeo.push(image, docker_registry.host, "team/app", "1.0", workdir=tmp_path)
    edge = servers.edge({"default": default.url, "reg": docker_registry.url}, cache_size="256MiB")
    containerd.set_mirror(docker_registry.host, [edge.url])
    ref = f"{docker_registry.host}/team/app:1.0"
    blobs = image.blobs()

    docker_registry.mark_log()
    containerd.pull(ref)
    assert containerd.image_digest(ref) == image.digest
    assert set(blobs) <= containerd.content_digests()
    docker_registry.wait_quiet()
    assert _client_requests(docker_registry) == [], "containerd went past the mirror"
    for digest in blobs:
        assert docker_registry.count("GET", f"/blobs/{digest}") == 1, digest
    assert default.count(None, "/team/") == 0
    assert edge.metric("quayside_edge_bytes_served") >= sum(len(b) for b in blobs.values())

    hits_before = edge.metric("quayside_edge_cache_hits", kind="blob")
    containerd.rm(ref)
    assert not set(blobs) & containerd.content_digests()
    docker_registry.mark_log()
    containerd.pull(ref)
    assert containerd.image_digest(ref) == image.digest
    docker_registry.wait_quiet()
    assert _client_requests(docker_registry) == []
    assert docker_registry.count("GET", "/blobs/") == 0, docker_registry.access_log()
    assert edge.metric("quayside_edge_cache_hits", kind="blob") - hits_before >= len(blobs)


def test_containerd_pulls_schema2_and_multi_platform_indexes_through_edge(
    containerd: Containerd,
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    image_factory: ImageFactory,
    tmp_path: Path,
) -> None:
    """Docker schema2, an OCI index and a Docker manifest list: containerd records the digest
    the upstream has (manifests served verbatim) and never falls back past the mirror."""
    items = {
        "schema2": image_factory.image(flavour="docker", layer_sizes=(256 * KiB,)),
        "oci-index": image_factory.index(),
        "docker-list": image_factory.index(flavour="docker"),
    }
    for tag, item in items.items():
        skopeo.push(item, docker_registry.host, "team/kinds", tag, workdir=tmp_path)
    edge = servers.edge({"reg": docker_registry.url}, cache_size="256MiB")
    containerd.set_mirror(docker_registry.host, [edge.url])
    docker_registry.mark_log()
    for tag, item in items.items():
        ref = f"{docker_registry.host}/team/kinds:{tag}"
        containerd.pull(ref)
        assert containerd.image_digest(ref) == item.digest, tag
    docker_registry.wait_quiet()
    assert _client_requests(docker_registry) == []
