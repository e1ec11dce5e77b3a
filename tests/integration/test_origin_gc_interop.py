"""Our garbage collection and Debian's ``docker-registry garbage-collect`` on one root the
origin wrote (skopeo pushes: OCI and Docker images sharing a layer, a multi-platform index, an
artifact with ``subject``, an untagged push, a re-tagged tag; then deletes by digest and by
tag). Copies of the root go to each collector:

- default mode: both delete exactly the same blobs, and each collected root is served by the
  other implementation with every tag intact (and our referrers index still works);
- ``--delete-untagged``: registry:2 unlinks every untagged revision, including the children of
  a tagged index (their configs and layers are collected, so the index breaks) and the
  referrer of a tagged image; ours keeps those and deletes the rest the same way.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness import skopeo
from harness.images import Image, ImageIndex, make_image, make_index, make_layer
from harness.images import sha256_digest as sha256
from harness.registry import REGISTRY_BIN, DockerRegistry
from harness.servers import OriginProcess

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None or shutil.which("docker-registry") is None:  # pragma: no cover
    pytest.skip("skopeo and docker-registry are required", allow_module_level=True)

REPO_ROOT = Path(__file__).resolve().parents[2]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DELETES = {"REGISTRY_STORAGE_DELETE_ENABLED": "true"}


def http(base: str, method: str, path: str, body: bytes = b"", ctype: str = "") -> int:
    req = urllib.request.Request(base + path, data=body or None, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


def http_json(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as resp:
        return json.loads(resp.read())


def push_referrer(url: str, repo: str, subject: Image) -> str:
    blob, empty = b"signature bytes", b"{}"
    for data in (blob, empty):
        assert http(url, "POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(data)}", data) == 201
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": sha256(empty),
                "size": 2,
            },
            "layers": [
                {"mediaType": "application/vnd.example.sig", "digest": sha256(blob), "size": 15}
            ],
            "subject": {
                "mediaType": subject.media_type,
                "digest": subject.digest,
                "size": subject.size,
            },
        }
    ).encode()
    assert http(url, "PUT", f"/v2/{repo}/manifests/{sha256(body)}", body, OCI_MANIFEST) == 201
    return sha256(body)


def blob_set(root: Path) -> set[str]:
    base = root / "docker/registry/v2/blobs/sha256"
    return {"sha256:" + p.parent.name for p in base.glob("*/*/data")}


def kept_items() -> dict[str, Image | ImageIndex]:
    shared = make_layer(48 * 1024, seed=7001)
    return {
        "team/app:v1": make_image([shared, make_layer(16 * 1024, seed=7002)], seed=7000),
        "team/docker:v1": make_image(
            [shared], flavour="docker", seed=7100
        ),  # shares a layer with team/app:v1
        "team/multi:all": make_index(layer_sizes=(16 * 1024,), seed=7200),
    }


def build_root(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A root the origin wrote, with garbage of every kind; returns (root, what is where)."""
    root = tmp_path / "root"
    origin = OriginProcess(root=root, workdir=tmp_path / "origin", env=DELETES)
    try:
        origin.start()
        items = kept_items()
        for ref, item in items.items():
            repo, tag = ref.split(":")
            skopeo.push(item, origin.host, repo, tag, workdir=tmp_path / "src")
        subject = items["team/app:v1"]
        assert isinstance(subject, Image)
        referrer = push_referrer(origin.url, "team/app", subject)
        deleted = make_image(layer_sizes=(24 * 1024,), seed=7300)
        skopeo.push(deleted, origin.host, "team/gone", "v1", workdir=tmp_path / "src")
        assert http(origin.url, "DELETE", f"/v2/team/gone/manifests/{deleted.digest}") == 202
        untagged = make_image(layer_sizes=(8 * 1024,), seed=7400)
        skopeo.push(untagged, origin.host, "team/app", "tmp", workdir=tmp_path / "src")
        assert http(origin.url, "DELETE", "/v2/team/app/manifests/tmp") == 202  # tag only
        retagged = make_image(layer_sizes=(8 * 1024,), seed=7500)
        skopeo.push(retagged, origin.host, "team/app", "moving", workdir=tmp_path / "src")
        moved_to = make_image(layer_sizes=(8 * 1024,), seed=7600)
        skopeo.push(moved_to, origin.host, "team/app", "moving", workdir=tmp_path / "src")
        origin.stop()
        assert origin.server_errors() == []
    finally:
        origin.close()
    items["team/app:moving"] = moved_to
    return root, {
        "items": items,
        "referrer": referrer,
        "deleted": deleted,
        "untagged": [untagged, retagged],
    }


def registry_gc(root: Path, workdir: Path, *flags: str) -> None:
    registry = DockerRegistry(root=root, workdir=workdir)
    registry.prepare()  # writes its config; the registry itself is not started
    proc = subprocess.run(
        [REGISTRY_BIN, "garbage-collect", *flags, str(registry.config_path)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()


def quayside_gc(root: Path, *flags: str) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "quayside.cli.gc",
            "--root",
            str(root),
            "--grace",
            "0s",
            "--json",
            *flags,
        ],
        capture_output=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert report["where"] == "local"
    return report


def assert_tags_served(host: str, items: dict[str, Any]) -> None:
    for ref, item in items.items():
        repo = ref.split(":")[0]
        assert skopeo.inspect_raw(f"{host}/{ref}") == item.manifest, ref
        children = item.images if isinstance(item, ImageIndex) else (item,)
        for child in children:
            raw = skopeo.inspect_raw(f"{host}/{repo}@{child.digest}")
            assert raw == child.manifest, (ref, child.digest)


def test_default_mode_deletes_what_registry2_deletes_and_each_serves_the_others_root(tmp_path):
    root, what = build_root(tmp_path)
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    shutil.copytree(root, theirs)
    shutil.copytree(root, ours)
    before = blob_set(root)

    registry_gc(theirs, tmp_path / "reg-gc")
    report = quayside_gc(ours)
    assert blob_set(ours) == blob_set(theirs)
    deleted = before - blob_set(ours)
    assert {d for d, _ in report["blobs_deleted"]} == deleted
    gone = what["deleted"]
    assert {gone.digest, gone.config_digest, *gone.layer_digests} <= deleted
    for untagged in what["untagged"]:  # revisions stay in default mode, in both
        assert untagged.digest in blob_set(ours)

    # registry:2 serves the root we collected ...
    registry = DockerRegistry(root=ours, workdir=tmp_path / "reg-serve")
    try:
        registry.start()
        assert_tags_served(registry.host, what["items"])
    finally:
        registry.close()
    # ... and we serve the root registry:2 collected, referrers index included
    origin = OriginProcess(root=theirs, workdir=tmp_path / "origin-theirs")
    try:
        origin.start()
        assert_tags_served(origin.host, what["items"])
        subject = what["items"]["team/app:v1"]
        listed = http_json(origin.url, f"/v2/team/app/referrers/{subject.digest}")
        assert [m["digest"] for m in listed["manifests"]] == [what["referrer"]]
        origin.stop()
        assert origin.server_errors() == []
    finally:
        origin.close()
    assert quayside_gc(theirs)["blobs_deleted"] == []  # nothing left that we would collect


def test_delete_untagged_keeps_index_children_and_referrers_registry2_would_break(tmp_path):
    root, what = build_root(tmp_path)
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    shutil.copytree(root, theirs)
    shutil.copytree(root, ours)

    registry_gc(theirs, tmp_path / "reg-gc", "--delete-untagged")
    quayside_gc(ours, "--delete-untagged")
    index = what["items"]["team/multi:all"]
    # registry:2 keeps the children's manifest blobs (the tagged index references them) but
    # unlinks the untagged child revisions and collects their configs and layers, and the
    # untagged referrer with its blobs; ours keeps all of those; the rest goes in both
    referrer = {what["referrer"], sha256(b"signature bytes"), sha256(b"{}")}
    assert blob_set(ours) - blob_set(theirs) == set(index.blobs()) | referrer
    assert blob_set(theirs) <= blob_set(ours)
    for untagged in what["untagged"]:
        assert untagged.digest not in blob_set(ours)
    registry = DockerRegistry(root=theirs, workdir=tmp_path / "reg-serve")
    try:
        registry.start()
        child = index.images[0]
        with pytest.raises(skopeo.SkopeoError):  # the index's children are gone there
            skopeo.inspect_raw(f"{registry.host}/team/multi@{child.digest}")
    finally:
        registry.close()
    origin = OriginProcess(root=ours, workdir=tmp_path / "origin-ours")
    try:
        origin.start()
        assert_tags_served(origin.host, what["items"])
        subject = what["items"]["team/app:v1"]
        listed = http_json(origin.url, f"/v2/team/app/referrers/{subject.digest}")
        assert [m["digest"] for m in listed["manifests"]] == [what["referrer"]]
    finally:
        origin.close()
