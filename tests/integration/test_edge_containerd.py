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

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import skopeo
from harness.containerd import Containerd
from harness.fixtures import ImageFactory
from harness.images import Image, ImageIndex, KiB, MiB
from harness.registry import DockerRegistry
from harness.servers import ServerGroup

pytestmark = pytest.mark.slow


AGENT = "containerd/"  # User-Agent prefix of containerd's own requests


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
    assert len(docker_registry.requests_by_agent(AGENT)) >= len(image.blobs())


def test_containerd_pulls_through_edge_mirror_selected_by_ns(
    containerd: Containerd,
    docker_registry: DockerRegistry,
    registry_factory: Callable[..., DockerRegistry],
    servers: ServerGroup,
    image_factory: ImageFactory,
    mirror_pull_check: Callable[..., Any],
    tmp_path: Path,
) -> None:
    default = registry_factory()
    image = image_factory.image(layer_sizes=(3 * MiB, 256 * KiB))
    skopeo.push(image, docker_registry.host, "team/app", "1.0", workdir=tmp_path)
    edge = servers.edge({"default": default.url, "reg": docker_registry.url}, cache_size="256MiB")
    containerd.set_mirror(docker_registry.host, [edge.url])
    ref = f"{docker_registry.host}/team/app:1.0"
    blobs = set(image.blobs())

    check = mirror_pull_check(docker_registry, edge, image, AGENT)
    containerd.pull(ref)
    assert containerd.image_digest(ref) == image.digest
    assert blobs <= containerd.content_digests()
    check.filled_once()
    assert default.count(None, "/team/") == 0

    containerd.rm(ref)
    assert not blobs & containerd.content_digests()
    containerd.pull(ref)
    assert containerd.image_digest(ref) == image.digest
    check.served_from_cache()


def test_containerd_pulls_schema2_and_multi_platform_indexes_through_edge(
    containerd: Containerd,
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    manifest_kinds: dict[str, Image | ImageIndex],
) -> None:
    """Docker schema2, an OCI index and a Docker manifest list: containerd records the digest
    the upstream has (manifests served verbatim) and never falls back past the mirror."""
    edge = servers.edge({"reg": docker_registry.url}, cache_size="256MiB")
    containerd.set_mirror(docker_registry.host, [edge.url])
    docker_registry.mark_log()
    for tag, item in manifest_kinds.items():
        ref = f"{docker_registry.host}/team/kinds:{tag}"
        containerd.pull(ref)
        assert containerd.image_digest(ref) == item.digest, tag
    docker_registry.wait_quiet()
    assert docker_registry.requests_by_agent(AGENT) == []
