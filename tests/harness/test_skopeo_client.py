"""harness.skopeo: pins what skopeo 1.9 keeps and converts, per manifest flavour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import skopeo
from harness.fixtures import ImageFactory
from harness.images import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from harness.layouts import layout_tags, write_layout
from harness.registry import DockerRegistry


@pytest.mark.parametrize(
    ("flavour", "multi", "media_type"),
    [
        ("oci", False, OCI_MANIFEST),
        ("docker", False, DOCKER_MANIFEST),
        ("oci", True, OCI_INDEX),
        ("docker", True, DOCKER_LIST),
    ],
)
def test_push_serves_exact_bytes(
    docker_registry: DockerRegistry,
    image_factory: ImageFactory,
    tmp_path: Path,
    flavour: str,
    multi: bool,
    media_type: str,
) -> None:
    item = image_factory.index(flavour=flavour) if multi else image_factory.image(flavour=flavour)  # type: ignore[arg-type]
    skopeo.push(item, docker_registry.host, "multi/arch", "t", workdir=tmp_path)
    raw = skopeo.inspect_raw(docker_registry.ref("multi/arch", "t"))
    assert raw == item.manifest
    assert json.loads(raw)["mediaType"] == media_type
    if multi:
        for child in item.images:  # type: ignore[union-attr]
            assert (
                skopeo.inspect_raw(docker_registry.ref("multi/arch", child.digest))
                == child.manifest
            )


def test_oci_layout_cannot_hold_a_pushable_docker_manifest(
    docker_registry: DockerRegistry, image_factory: ImageFactory, tmp_layout: Path
) -> None:
    write_layout(tmp_layout, {"d": image_factory.image(flavour="docker")})
    with pytest.raises(skopeo.SkopeoError, match="no descriptor found"):
        skopeo.push_layout(tmp_layout, "d", docker_registry.host, "x/y")


def test_pull_docker_to_oci_layout_converts(
    docker_registry: DockerRegistry, image_factory: ImageFactory, tmp_path: Path
) -> None:
    img = image_factory.image(flavour="docker")
    skopeo.push(img, docker_registry.host, "x/y", "d", workdir=tmp_path)
    converted = layout_tags(
        skopeo.pull_to_layout(docker_registry.host, "x/y", "d", tmp_path / "a")
    )["pulled"]
    assert converted["mediaType"] == OCI_MANIFEST and converted["digest"] != img.digest
    kept = skopeo.pull_to_dir(docker_registry.host, "x/y", "d", tmp_path / "b")
    assert (kept / "manifest.json").read_bytes() == img.manifest


def test_errors_carry_stderr(docker_registry: DockerRegistry) -> None:
    with pytest.raises(skopeo.SkopeoError) as info:
        skopeo.inspect_raw(docker_registry.ref("no/such", "tag"))
    assert "manifest unknown" in info.value.stderr
