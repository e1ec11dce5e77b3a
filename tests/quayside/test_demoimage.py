"""`quayside demo-image`: a tiny OCI layout written offline that skopeo reads as an image."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from harness import images, layouts, skopeo
from quayside.demoimage import GREETING, host_architecture, write_demo_layout


def test_layout_is_a_valid_image_for_this_machine(tmp_path: Path) -> None:
    image = write_demo_layout(tmp_path / "layout", "latest")
    info = json.loads(skopeo.run(["inspect", f"oci:{tmp_path / 'layout'}:latest"]))
    assert info["Digest"] == image.digest
    assert info["Os"] == "linux" and info["Architecture"] == host_architecture()
    manifest = json.loads(layouts.read_layout_blob(tmp_path / "layout", image.digest))
    assert len(manifest["layers"]) == 1
    layer = layouts.read_layout_blob(tmp_path / "layout", manifest["layers"][0]["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        member = tar.extractfile("hello.txt")
        assert member is not None and member.read() == GREETING
    for blob in (manifest["config"], *manifest["layers"]):
        data = layouts.read_layout_blob(tmp_path / "layout", blob["digest"])
        assert images.sha256_digest(data) == blob["digest"] and len(data) == blob["size"]


def test_same_bytes_every_time_and_other_tags_kept(tmp_path: Path) -> None:
    first = write_demo_layout(tmp_path / "a", "latest")
    again = write_demo_layout(tmp_path / "b", "latest")
    assert first.digest == again.digest
    write_demo_layout(tmp_path / "a", "1.0")
    write_demo_layout(tmp_path / "a", "latest")  # rewriting a tag does not duplicate it
    tags = layouts.layout_tags(tmp_path / "a")
    assert sorted(tags) == ["1.0", "latest"]
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert len(index["manifests"]) == 2
    assert not [p for p in (tmp_path / "a").rglob("*.tmp")]


def test_command_writes_and_prints_the_push(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "quayside", "demo-image", str(tmp_path / "d"), "--tag", "v1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert f"oci:{tmp_path / 'd'}:v1 docker://127.0.0.1:5000/team/app:1.0" in out.stdout
    assert "v1" in layouts.layout_tags(tmp_path / "d")
