"""podman pulls through the edge named as a ``[[registry.mirror]]`` in registries.conf.

The upstream is Debian's docker-registry; podman (as root, vfs storage, all state in a temp dir)
is told to pull ``UPSTREAM/team/app:1.0`` with the edge as mirror. What proves the edge served
it: the upstream's access log holds no request from podman itself (user agent
``containers/...``; podman falls back to the upstream when the mirror fails), each blob was
fetched upstream exactly once (by the edge), and a second pull after ``podman rmi`` reaches the
upstream for no blob at all while the edge counts cache hits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import podman as podman_mod
from harness import skopeo
from harness.fixtures import ImageFactory
from harness.images import Image, KiB, MiB
from harness.podman import Podman
from harness.registry import DockerRegistry
from harness.servers import EdgeProcess, ServerGroup

pytestmark = pytest.mark.slow


@functools.cache
def _podman_unavailable() -> str | None:
    return podman_mod.unavailable_reason()


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    reason = _podman_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with Podman(tmp_path / "podman") as client:
        yield client


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerGroup]:
    group = ServerGroup(tmp_path / "servers")
    try:
        yield group
    finally:
        print(group.log_tails())
        group.close()


def _client_requests(registry: DockerRegistry) -> list[str]:
    """Upstream requests that came straight from podman (a fallback past the mirror)."""
    return [
        f"{r.method} {r.target} {r.agent}"
        for r in registry.access_log()
        if r.agent.startswith("containers/")
    ]


def _pull_twice_through(
    podman: Podman, registry: DockerRegistry, edge: EdgeProcess, image: Image, repo: str
) -> None:
    ref = f"{registry.host}/{repo}:1.0"
    blobs = image.blobs()

    registry.mark_log()
    podman.pull(ref)
    assert podman.image_digest(ref) == image.digest
    registry.wait_quiet()
    assert _client_requests(registry) == [], "podman went past the mirror to the upstream"
    for digest in blobs:
        assert registry.count("GET", f"/blobs/{digest}") == 1, digest
    served = edge.metric("quayside_edge_bytes_served")
    assert served >= sum(len(b) for b in blobs.values())

    hits_before = edge.metric("quayside_edge_cache_hits", kind="blob")
    podman.rmi(ref)
    assert podman.images() == []
    registry.mark_log()
    podman.pull(ref)
    assert podman.image_digest(ref) == image.digest
    registry.wait_quiet()
    assert _client_requests(registry) == []
    assert registry.count("GET", "/blobs/") == 0, registry.access_log()
    assert edge.metric("quayside_edge_cache_hits", kind="blob") - hits_before >= len(blobs)


def test_podman_pulls_directly_from_docker_registry(
    podman: Podman, docker_registry: DockerRegistry, image_factory: ImageFactory, tmp_path: Path
) -> None:
    """Baseline without the edge: the isolated podman works against the upstream itself."""
    image = image_factory.image(layer_sizes=(1 * MiB,))
    skopeo.push(image, docker_registry.host, "team/direct", "1.0", workdir=tmp_path)
    podman.configure(docker_registry.host)
    ref = f"{docker_registry.host}/team/direct:1.0"
    podman.pull(ref)
    assert podman.image_digest(ref) == image.digest
    docker_registry.wait_quiet()
    for digest in image.blobs():
        assert docker_registry.count("GET", f"/blobs/{digest}") == 1
    assert len(_client_requests(docker_registry)) >= len(image.blobs())


def test_podman_pulls_through_edge_mirror_and_second_pull_is_served_from_cache(
    podman: Podman,
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    image_factory: ImageFactory,
    tmp_path: Path,
) -> None:
    image = image_factory.image(layer_sizes=(3 * MiB, 256 * KiB))
    skopeo.push(image, docker_registry.host, "team/app", "1.0", workdir=tmp_path)
    edge = servers.edge({"reg": docker_registry.url}, cache_size="256MiB")
    podman.configure(docker_registry.host, [edge.host])

    _pull_twice_through(podman, docker_registry, edge, image, "team/app")


def test_podman_pulls_through_edge_mirror_with_path_prefix(
    podman: Podman,
    registry_factory: Callable[..., DockerRegistry],
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    image_factory: ImageFactory,
    tmp_path: Path,
) -> None:
    """The mirror location ``EDGE/reg`` selects the upstream named ``reg`` by path prefix,
    although another upstream is the edge's default."""
    other = registry_factory()
    image = image_factory.image(layer_sizes=(1 * MiB,))
    skopeo.push(image, docker_registry.host, "team/prefixed", "1.0", workdir=tmp_path)
    edge = servers.edge({"other": other.url, "reg": docker_registry.url}, cache_size="256MiB")
    podman.configure(docker_registry.host, [f"{edge.host}/reg"])

    _pull_twice_through(podman, docker_registry, edge, image, "team/prefixed")
    assert other.count(None, "/team/") == 0


def test_podman_pulls_schema2_and_multi_platform_indexes_through_edge(
    podman: Podman,
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    image_factory: ImageFactory,
    tmp_path: Path,
) -> None:
    """Docker schema2, an OCI index and a Docker manifest list: podman records the digest the
    upstream has (manifests served verbatim) and never falls back past the mirror."""
    items = {
        "schema2": image_factory.image(flavour="docker", layer_sizes=(256 * KiB,)),
        "oci-index": image_factory.index(),
        "docker-list": image_factory.index(flavour="docker"),
    }
    for tag, item in items.items():
        skopeo.push(item, docker_registry.host, "team/kinds", tag, workdir=tmp_path)
    edge = servers.edge({"reg": docker_registry.url}, cache_size="256MiB")
    podman.configure(docker_registry.host, [edge.host])
    docker_registry.mark_log()
    for tag, item in items.items():
        ref = f"{docker_registry.host}/team/kinds:{tag}"
        podman.pull(ref)
        assert podman.image_digest(ref) == item.digest, tag
    docker_registry.wait_quiet()
    assert _client_requests(docker_registry) == []
