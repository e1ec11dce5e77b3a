"""harness.images: deterministic, incompressible layers; well-formed manifests and layouts."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from harness.images import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    MiB,
    make_image,
    make_index,
    make_layer,
)
from harness.layouts import layout_tags, read_layout_blob, write_dir, write_layout


def test_layer_is_deterministic_and_really_that_big() -> None:
    a = make_layer(2 * MiB, seed=3)
    b = make_layer(2 * MiB, seed=3)
    c = make_layer(2 * MiB, seed=4)
    assert a.digest == b.digest and a.data == b.data
    assert a.digest != c.digest
    assert 2 * MiB <= a.size < 2 * MiB + 64 * 1024
    assert a.digest == "sha256:" + hashlib.sha256(a.data).hexdigest()
    tar_bytes = gzip.decompress(a.data)
    assert a.diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        (member,) = tar.getmembers()
        assert member.mtime == 0 and member.isfile()


def test_oci_and_docker_manifests_reference_config_and_layers() -> None:
    for flavour, mtype, ltype in (
        ("oci", OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("docker", DOCKER_MANIFEST, DOCKER_LAYER_GZIP),
    ):
        img = make_image(flavour=flavour, layer_sizes=[1000, 2000], seed=11)
        doc = json.loads(img.manifest)
        assert doc["mediaType"] == img.media_type == mtype
        assert doc["config"]["digest"] == img.config_digest
        assert doc["config"]["size"] == len(img.config)
        assert [entry["mediaType"] for entry in doc["layers"]] == [ltype, ltype]
        assert [entry["digest"] for entry in doc["layers"]] == img.layer_digests
        config = json.loads(img.config)
        assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in img.layers]
    docker = make_image(flavour="docker", seed=1)
    assert json.loads(docker.manifest)["config"]["mediaType"] == DOCKER_CONFIG


def test_index_lists_each_platform() -> None:
    for flavour, mtype in (("oci", OCI_INDEX), ("docker", DOCKER_LIST)):
        idx = make_index(flavour=flavour, seed=2)
        doc = json.loads(idx.manifest)
        assert doc["mediaType"] == mtype
        assert [m["digest"] for m in doc["manifests"]] == [i.digest for i in idx.images]
        assert {m["platform"]["architecture"] for m in doc["manifests"]} == {
            "amd64",
            "arm64",
            "arm",
        }
        assert len({i.config_digest for i in idx.images}) == 3


def test_layout_has_tags_and_all_blobs(tmp_layout: Path) -> None:
    img = make_image(seed=5)
    idx = make_index(seed=6)
    write_layout(tmp_layout, {"one": img, "multi": idx})
    write_layout(tmp_layout, {"one": img})  # idempotent, keeps "multi"
    assert json.loads((tmp_layout / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    tags = layout_tags(tmp_layout)
    assert set(tags) == {"one", "multi"}
    assert tags["multi"]["digest"] == idx.digest
    assert tags["one"]["annotations"][REF_NAME] == "one"
    for digest, data in {**img.blobs(), **idx.blobs(), img.digest: img.manifest}.items():
        assert read_layout_blob(tmp_layout, digest) == data


def test_dir_format_for_skopeo(tmp_path: Path) -> None:
    idx = make_index(flavour="docker", seed=8)
    write_dir(tmp_path / "d", idx)
    assert (tmp_path / "d" / "manifest.json").read_bytes() == idx.manifest
    for child in idx.images:
        hexpart = child.digest.split(":")[1]
        assert (tmp_path / "d" / f"{hexpart}.manifest.json").read_bytes() == child.manifest
        assert (tmp_path / "d" / child.config_digest.split(":")[1]).read_bytes() == child.config
