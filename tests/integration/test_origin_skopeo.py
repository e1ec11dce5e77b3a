"""skopeo pushes to and pulls from a real origin process; every digest survives the round trip.

The origin runs as ``python -m quayside origin serve --listen 127.0.0.1:0 --root DIR``
(:class:`harness.servers.OriginProcess`); images are generated offline (:mod:`harness.images`)
with layers of a few MiB, pushed by skopeo with ``--preserve-digests`` (so any conversion would
fail the push), read back with ``skopeo inspect --raw`` (bytes exactly as served) and pulled
into skopeo's ``dir:`` format or an OCI layout, whose blobs are compared with the originals by
digest.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import skopeo
from harness.images import MiB, make_image, make_index
from harness.images import sha256_digest as sha256
from harness.servers import OriginProcess

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover - installed by `make install`
    pytest.skip("skopeo is not installed", allow_module_level=True)


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[OriginProcess]:
    """A started origin on ``tmp_path/root``; at teardown it must have answered no 5xx."""
    proc = OriginProcess(
        root=tmp_path / "root",
        workdir=tmp_path / "origin",
        env={"REGISTRY_STORAGE_DELETE_ENABLED": "true"},
    )
    try:
        proc.start()
        yield proc
    finally:
        proc.close()
    assert proc.server_errors() == []


def get_json(origin: OriginProcess, path: str) -> Any:
    with urllib.request.urlopen(origin.url + path, timeout=10) as resp:
        return json.loads(resp.read())


def assert_dir_pull_matches(target: Path, manifest: bytes, blobs: dict[str, bytes]) -> None:
    """skopeo's ``dir:`` output holds the served manifest bytes and every blob by hex name."""
    assert (target / "manifest.json").read_bytes() == manifest
    for digest, data in blobs.items():
        assert sha256((target / digest.split(":", 1)[1]).read_bytes()) == digest
        assert (target / digest.split(":", 1)[1]).stat().st_size == len(data)


@pytest.mark.parametrize("flavour", ["oci", "docker"])
def test_single_platform_image_round_trips_byte_for_byte(origin, tmp_path, flavour):
    image = make_image(flavour=flavour, layer_sizes=(3 * MiB, 1 * MiB, 1000), seed=500)
    ref = skopeo.push(image, origin.host, "team/app", "v1", workdir=tmp_path)

    assert skopeo.inspect_raw(ref) == image.manifest
    assert skopeo.inspect_raw(f"{origin.host}/team/app@{image.digest}") == image.manifest
    info = skopeo.inspect(ref)
    assert info["Digest"] == image.digest
    assert info["Layers"] == image.layer_digests

    pulled = skopeo.pull_to_dir(origin.host, "team/app", "v1", tmp_path / "pulled")
    assert_dir_pull_matches(pulled, image.manifest, image.blobs())

    assert get_json(origin, "/v2/team/app/tags/list") == {"name": "team/app", "tags": ["v1"]}
    assert get_json(origin, "/v2/_catalog") == {"repositories": ["team/app"]}


@pytest.mark.parametrize("flavour", ["oci", "docker"])
def test_multi_platform_index_round_trips(origin, tmp_path, flavour):
    index = make_index(flavour=flavour, layer_sizes=(1 * MiB,), seed=600)
    ref = skopeo.push(index, origin.host, "multi/arch", "all", workdir=tmp_path)

    assert skopeo.inspect_raw(ref) == index.manifest
    for child in index.images:
        served = skopeo.inspect_raw(f"{origin.host}/multi/arch@{child.digest}")
        assert served == child.manifest

    # Every platform comes back: copy the whole index into a fresh origin repository and
    # compare bytes again (the origin is both source and destination here).
    skopeo.copy(
        f"docker://{origin.host}/multi/arch:all",
        f"docker://{origin.host}/multi/copy:all",
        multi_arch="all",
        preserve_digests=True,
    )
    assert skopeo.inspect_raw(f"{origin.host}/multi/copy:all") == index.manifest
    for child in index.images:
        target = skopeo.pull_to_dir(
            origin.host, "multi/copy", child.digest, tmp_path / f"pull-{child.digest[7:19]}"
        )
        assert_dir_pull_matches(target, child.manifest, child.blobs())


def test_oci_index_pulls_into_an_oci_layout_with_identical_digests(origin, tmp_path):
    index = make_index(flavour="oci", layer_sizes=(2 * MiB,), seed=700)
    skopeo.push(index, origin.host, "layout/pull", "v1", workdir=tmp_path)
    layout = skopeo.pull_to_layout(
        origin.host, "layout/pull", "v1", tmp_path / "layout", preserve_digests=True
    )
    top = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in top["manifests"]] == [index.digest]
    blobs_dir = layout / "blobs" / "sha256"
    for digest, data in {**index.blobs(), index.digest: index.manifest}.items():
        assert (blobs_dir / digest.split(":", 1)[1]).read_bytes() == data
    for child in index.images:
        assert (blobs_dir / child.digest.split(":", 1)[1]).read_bytes() == child.manifest


def test_repush_after_delete_serves_again(origin, tmp_path):
    image = make_image(layer_sizes=(1 * MiB,), seed=800)
    ref = skopeo.push(image, origin.host, "del/me", "v1", workdir=tmp_path)
    req = urllib.request.Request(
        f"{origin.url}/v2/del/me/manifests/{image.digest}", method="DELETE"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 202
    with pytest.raises(skopeo.SkopeoError):
        skopeo.inspect_raw(ref)
    skopeo.push(image, origin.host, "del/me", "v1", workdir=tmp_path / "again")
    assert skopeo.inspect_raw(ref) == image.manifest
