"""Fixtures shared by the multi-process integration tests (real servers, real clients).

- ``servers``: a :class:`harness.servers.ServerGroup` under ``tmp_path``; at teardown it prints
  every server's log tail (pytest shows it for a failed test) and stops them all.
- ``containerd`` / ``podman``: a private containerd daemon / an isolated podman in ``tmp_path``;
  the test is skipped with the tool's own error when it cannot run on this machine (probed
  once per test process).
- ``manifest_kinds``: a Docker schema2 image, an OCI index and a Docker manifest list, pushed
  with skopeo to ``docker_registry`` as ``team/kinds:<kind>`` (``{kind: item}``).
- ``mirror_pull_check``: ``mirror_pull_check(upstream, edge, image, agent_prefix)`` returns a
  :class:`MirrorPullCheck` that asserts what a client's pull through the edge cost the upstream.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import containerd as containerd_mod
from harness import podman as podman_mod
from harness import skopeo
from harness.containerd import Containerd
from harness.fixtures import ImageFactory
from harness.images import Image, ImageIndex, KiB
from harness.podman import Podman
from harness.registry import DockerRegistry
from harness.servers import EdgeProcess, ServerGroup


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerGroup]:
    group = ServerGroup(tmp_path / "servers")
    try:
        yield group
    finally:
        print(group.log_tails())
        group.close()


@functools.cache
def _unavailable(tool: str) -> str | None:
    """Why ``tool`` cannot run here (None: it can); the probe runs once per test process."""
    probes = {
        "containerd": containerd_mod.unavailable_reason,
        "podman": podman_mod.unavailable_reason,
    }
    return probes[tool]()


def _require(tool: str) -> None:
    reason = _unavailable(tool)
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Containerd]:
    _require("containerd")
    with Containerd(tmp_path / "containerd") as daemon:
        yield daemon


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    _require("podman")
    with Podman(tmp_path / "podman") as client:
        yield client


@pytest.fixture
def manifest_kinds(
    docker_registry: DockerRegistry, image_factory: ImageFactory, tmp_path: Path
) -> dict[str, Image | ImageIndex]:
    items: dict[str, Image | ImageIndex] = {
        "schema2": image_factory.image(flavour="docker", layer_sizes=(256 * KiB,)),
        "oci-index": image_factory.index(),
        "docker-list": image_factory.index(flavour="docker"),
    }
    for tag, item in items.items():
        skopeo.push(item, docker_registry.host, "team/kinds", tag, workdir=tmp_path)
    return items


class MirrorPullCheck:
    """The upstream side of "a client pulls ``image`` with the edge as its mirror", twice.

    Created before the first pull (it marks the upstream's log). After the first pull,
    :meth:`filled_once` asserts that the client never went past the mirror (no upstream request
    with the client's User-Agent) and that the edge fetched each blob upstream exactly once and
    served at least the image's bytes. After the client removed the image and pulled again,
    :meth:`served_from_cache` asserts that no blob reached the upstream and that the edge
    counted a blob cache hit per blob.
    """

    def __init__(
        self,
        upstream: DockerRegistry,
        edge: EdgeProcess,
        image: Image | ImageIndex,
        agent_prefix: str,
    ) -> None:
        self.upstream = upstream
        self.edge = edge
        self.blobs = image.blobs()
        self.agent_prefix = agent_prefix
        self._hits_before = 0.0
        upstream.mark_log()

    def filled_once(self) -> None:
        self.upstream.wait_quiet()
        went_past = self.upstream.requests_by_agent(self.agent_prefix)
        assert went_past == [], "the client went past the mirror to the upstream"
        for digest in self.blobs:
            assert self.upstream.count("GET", f"/blobs/{digest}") == 1, digest
        served = self.edge.metric("quayside_edge_bytes_served")
        assert served >= sum(len(b) for b in self.blobs.values())
        self._hits_before = self.edge.metric("quayside_edge_cache_hits", kind="blob")
        self.upstream.mark_log()

    def served_from_cache(self) -> None:
        self.upstream.wait_quiet()
        assert self.upstream.requests_by_agent(self.agent_prefix) == []
        assert self.upstream.count("GET", "/blobs/") == 0, self.upstream.access_log()
        hits = self.edge.metric("quayside_edge_cache_hits", kind="blob") - self._hits_before
        assert hits >= len(self.blobs)


@pytest.fixture
def mirror_pull_check() -> Callable[..., MirrorPullCheck]:
    return MirrorPullCheck
