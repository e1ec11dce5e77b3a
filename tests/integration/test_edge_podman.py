"""podman pulls through the edge named as a ``[[registry.mirror]]`` in registries.conf.

The upstream is Debian's docker-registry; podman (as root, vfs storage, all state in a temp dir)
is told to pull ``UPSTREAM/team/app:1.0`` with the edge as mirror. What proves the edge served
it: the upstream's access log holds no request from podman itself (user agent
``containers/...``; podman falls back to the upstream when the mirror fails), each blob was
fetched upstream exactly once (by the edge), and a second pull after ``podman rmi`` reaches the
upstream for no blob at all while the edge counts cache hits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import skopeo
from harness.fixtures import ImageFactory
from harness.images import Image, ImageIndex, KiB, MiB
from harness.podman import Podman
from harness.registry import DockerRegistry
from harness.servers import ServerGroup

pytestmark = pytest.mark.slow


AGENT = "containers/"  # User-Agent prefix of podman's own requests


def _pull_twice_through(podman: Podman, ref: str, digest: str, check: Any) -> None:
    """Pull, remove (layers too), pull again; ``check`` is a ``mirror_pull_check`` made before."""
    podman.pull(ref)
    assert podman.image_digest(ref) == digest
    check.filled_once()
    podman.rmi(ref)
    assert podman.images() == []
    podman.pull(ref)
    assert podman.image_digest(ref) == digest
    check.served_from_cache()


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
    assert len(docker_registry.requests_by_agent(AGENT)) >= len(image.blobs())


def test_podman_pulls_through_edge_mirror_and_second_pull_is_served_from_cache(
    podman: Podman,
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    image_factory: ImageFactory,
    mirror_pull_check: Callable[..., Any],
    tmp_path: Path,
) -> None:
    image = image_factory.image(layer_sizes=(3 * MiB, 256 * KiB))
    skopeo.push(image, docker_registry.host, "team/app", "1.0", workdir=tmp_path)
    edge = servers.edge({"reg": docker_registry.url}, cache_size="256MiB")
    podman.configure(docker_registry.host, [edge.host])
    check = mirror_pull_check(docker_registry, edge, image, AGENT)
    _pull_twice_through(podman, f"{docker_registry.host}/team/app:1.0", image.digest, check)


def test_podman_pulls_through_edge_mirror_with_path_prefix(
    podman: Podman,
    registry_factory: Callable[..., DockerRegistry],
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    image_factory: ImageFactory,
    mirror_pull_check: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """The mirror location ``EDGE/reg`` selects the upstream named ``reg`` by path prefix,
    although another upstream is the edge's default."""
    other = registry_factory()
    image = image_factory.image(layer_sizes=(1 * MiB,))
    skopeo.push(image, docker_registry.host, "team/prefixed", "1.0", workdir=tmp_path)
    edge = servers.edge({"other": other.url, "reg": docker_registry.url}, cache_size="256MiB")
    podman.configure(docker_registry.host, [f"{edge.host}/reg"])
    check = mirror_pull_check(docker_registry, edge, image, AGENT)
    ref = f"{docker_registry.host}/team/prefixed:1.0"
    _pull_twice_through(podman, ref, image.digest, check)
    assert other.count(None, "/team/") == 0


def test_podman_pulls_schema2_and_multi_platform_indexes_through_edge(
    podman: Podman,
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    manifest_kinds: dict[str, Image | ImageIndex],
) -> None:
    """Docker schema2, an OCI index and a Docker manifest list: podman records the digest the
    upstream has (manifests served verbatim) and never falls back past the mirror."""
    edge = servers.edge({"reg": docker_registry.url}, cache_size="256MiB")
    podman.configure(docker_registry.host, [edge.host])
    docker_registry.mark_log()
    for tag, item in manifest_kinds.items():
        ref = f"{docker_registry.host}/team/kinds:{tag}"
        podman.pull(ref)
        assert podman.image_digest(ref) == item.digest, tag
    docker_registry.wait_quiet()
    assert docker_registry.requests_by_agent(AGENT) == []
