"""Backups that restore, against a real origin process and skopeo.

``quayside backup`` runs (click's runner, real files) while a real origin serves the root;
the root is wiped, ``quayside restore`` writes the snapshot back, a fresh origin serves it and
skopeo reads every tag back with the digests it was pushed with. A second backup copies no
blob; a backup taken while skopeo pushes restores to a root where every snapshotted tag pulls
intact; a corrupt backup blob or a tampered snapshot is refused by restore.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness import skopeo
from harness.fixtures import ImageFactory
from harness.images import Image, ImageIndex, KiB, MiB, make_image
from harness.images import sha256_digest as sha256
from harness.servers import OriginProcess
from quayside.cli import backup as backup_cli
from quayside.cli import restore as restore_cli

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover - installed by `make install`
    pytest.skip("skopeo is not installed", allow_module_level=True)


def run_cli(command: Any, args: list[str]) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(command, [*args, "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def origin_on(root: Path, workdir: Path) -> OriginProcess:
    return OriginProcess(root=root, workdir=workdir).start()


def push_all(origin: OriginProcess, items: dict[str, Image | ImageIndex], tmp: Path) -> None:
    for ref, item in items.items():
        repo, tag = ref.rsplit(":", 1)
        skopeo.push(item, origin.host, repo, tag, workdir=tmp)


def assert_serves(origin: OriginProcess, items: dict[str, Image | ImageIndex], tmp: Path) -> None:
    """Every tag: manifest bytes as pushed; single images pulled with every blob intact."""
    for ref, item in items.items():
        repo, tag = ref.rsplit(":", 1)
        assert skopeo.inspect_raw(f"{origin.host}/{ref}") == item.manifest, ref
        if isinstance(item, ImageIndex):
            for child in item.images:
                served = skopeo.inspect_raw(f"{origin.host}/{repo}@{child.digest}")
                assert served == child.manifest
            continue
        out = skopeo.pull_to_dir(
            origin.host, repo, tag, tmp / f"pull-{repo.replace('/', '_')}-{tag}"
        )
        for digest, data in item.blobs().items():
            assert sha256((out / digest.split(":", 1)[1]).read_bytes()) == digest
            assert len(data) == (out / digest.split(":", 1)[1]).stat().st_size


@pytest.fixture
def images(image_factory: ImageFactory) -> dict[str, Image | ImageIndex]:
    shared = image_factory.layer(1 * MiB)
    base = image_factory.image(layer_sizes=(2 * MiB,))
    return {
        "team/app:1.0": make_image([shared, image_factory.layer(300 * KiB)], seed=11),
        "team/app:latest": base,
        "team/other:1.0": make_image([shared], flavour="docker", seed=12),
        "multi/arch:all": image_factory.index(layer_sizes=(200 * KiB,)),
        "lists/docker:v2": image_factory.index(flavour="docker", layer_sizes=(100 * KiB,)),
        "alias/same:one": base,
    }


def test_backup_wipe_restore_serves_every_tag_with_the_same_digests(tmp_path, images):
    root = tmp_path / "root"
    origin = origin_on(root, tmp_path / "origin1")
    try:
        push_all(origin, images, tmp_path)
        code, first = run_cli(backup_cli.command, [str(tmp_path / "backup"), "--root", str(root)])
        assert code == 0 and first["ok"], first
        assert first["repositories"] == 5 and first["tags"] == 6
        assert first["blobs_copied"] > 0 and first["blobs_present"] == 0
        code, second = run_cli(backup_cli.command, [str(tmp_path / "backup"), "--root", str(root)])
        assert code == 0 and second["blobs_copied"] == 0 and second["bytes_copied"] == 0
        assert second["blobs_present"] == first["blobs_copied"]
    finally:
        origin.close()

    # The backup holds each blob once, under its digest.
    stored = sorted((tmp_path / "backup" / "blobs" / "sha256").rglob("*"))
    files = [p for p in stored if p.is_file()]
    for f in files:
        assert sha256(f.read_bytes()) == "sha256:" + f.name
    assert len(list((tmp_path / "backup" / "snapshots").glob("*.json"))) == 2

    shutil.rmtree(root)
    code, restored = run_cli(restore_cli.command, [first["snapshot"], str(root)])
    assert code == 0 and restored["ok"], restored
    assert restored["tags"] == 6 and restored["blobs_written"] == first["blobs_total"]

    origin = origin_on(root, tmp_path / "origin2")
    try:
        assert_serves(origin, images, tmp_path / "after")
        assert origin.server_errors() == []
    finally:
        origin.close()


def test_backup_taken_while_skopeo_pushes_restores_every_snapshotted_tag(tmp_path, image_factory):
    root = tmp_path / "root"
    origin = origin_on(root, tmp_path / "origin1")
    pushed: dict[str, Image] = {}
    errors: list[BaseException] = []

    def pusher(n: int) -> None:
        try:
            for i in range(3):
                image = image_factory.image(layer_sizes=(512 * KiB, 64 * KiB))
                ref = f"busy/repo{n}:t{i}"
                skopeo.push(
                    image, origin.host, f"busy/repo{n}", f"t{i}", workdir=tmp_path / f"w{n}"
                )
                pushed[ref] = image
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=pusher, args=(n,)) for n in range(3)]
    try:
        for t in threads:
            t.start()
        reports = []
        while any(t.is_alive() for t in threads) and len(reports) < 60:
            code, report = run_cli(
                backup_cli.command, [str(tmp_path / "backup"), "--root", str(root)]
            )
            assert code == 0, report
            reports.append(report)
        for t in threads:
            t.join(timeout=100)
        assert not errors, errors
    finally:
        origin.close()

    # Every snapshot checks out; the one taken mid-push restores into a fresh root where
    # everything it lists serves.
    for report in reports:
        code, dry = run_cli(
            restore_cli.command, [report["snapshot"], str(tmp_path / "dry"), "--dry-run"]
        )
        assert code == 0 and dry["ok"], dry
    assert not (tmp_path / "dry").exists()
    mid = max((r for r in reports if 0 < r["tags"] < 9), key=lambda r: r["tags"])
    target = tmp_path / "restored"
    code, restored = run_cli(restore_cli.command, [mid["snapshot"], str(target)])
    assert code == 0 and restored["ok"], restored
    doc_tags = _snapshot_tags(tmp_path / "backup", mid["snapshot_digest"])
    assert len(doc_tags) == mid["tags"]
    origin = origin_on(target, tmp_path / "origin2")
    try:
        for ref, digest in doc_tags.items():
            assert pushed[ref].digest == digest
            assert_serves(origin, {ref: pushed[ref]}, tmp_path / "check")
    finally:
        origin.close()
    # The last backup (after every push ended) holds all nine tags.
    _, final = run_cli(backup_cli.command, [str(tmp_path / "backup"), "--root", str(root)])
    assert final["tags"] == 9 and final["ok"]


def _snapshot_tags(backup: Path, digest: str) -> dict[str, str]:
    hexd = digest.split(":", 1)[1]
    doc = json.loads((backup / "blobs" / "sha256" / hexd[:2] / hexd).read_bytes())
    return {
        f"{name}:{tag}": d
        for name, entry in doc["repositories"].items()
        for tag, d in entry["tags"].items()
    }


def test_restore_refuses_a_corrupt_backup_blob_and_a_tampered_snapshot(tmp_path, image_factory):
    root = tmp_path / "root"
    origin = origin_on(root, tmp_path / "origin")
    good = image_factory.image(layer_sizes=(128 * KiB,))
    bad = image_factory.image(layer_sizes=(256 * KiB,))
    try:
        push_all(origin, {"keep/me:1": good, "rot/ten:1": bad}, tmp_path)
    finally:
        origin.close()
    code, report = run_cli(backup_cli.command, [str(tmp_path / "backup"), "--root", str(root)])
    assert code == 0

    # Flip one byte of a layer in the backup (size unchanged).
    layer = bad.layer_digests[0].split(":", 1)[1]
    path = tmp_path / "backup" / "blobs" / "sha256" / layer[:2] / layer
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))

    target = tmp_path / "restored"
    code, restored = run_cli(restore_cli.command, [str(tmp_path / "backup"), str(target)])
    assert code == 1 and not restored["ok"]
    assert [f["digest"] for f in restored["failed"]] == [bad.layer_digests[0]]
    assert {"repository": "rot/ten", "tag": "1", "manifest": bad.digest} in restored["skipped"]
    v2 = target / "docker" / "registry" / "v2"
    assert not (v2 / "blobs" / "sha256" / layer[:2] / layer).exists()
    assert not (v2 / "repositories" / "rot" / "ten" / "_manifests" / "tags" / "1").exists()
    assert (v2 / "repositories" / "keep" / "me" / "_manifests" / "tags" / "1").is_dir()

    # A snapshot document changed after the backup no longer matches the digest its pointer
    # names: refused before anything is written.
    hexd = report["snapshot_digest"].split(":", 1)[1]
    doc_path = tmp_path / "backup" / "blobs" / "sha256" / hexd[:2] / hexd
    doc = json.loads(doc_path.read_bytes())
    doc["repositories"]["rot/ten"]["tags"]["evil"] = bad.digest
    doc_path.write_text(json.dumps(doc))
    result = CliRunner().invoke(restore_cli.command, [report["snapshot"], str(tmp_path / "r2")])
    assert result.exit_code == 2 and "hashes to" in result.output
    assert not (tmp_path / "r2").exists()
