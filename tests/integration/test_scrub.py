"""``quayside scrub`` against a running origin process: a blob the test corrupts on disk is
found, moved to the quarantine (not deleted), and the running origin answers 404 for it
instead of serving the bad bytes; pushing the image again heals it."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness import skopeo
from harness.fixtures import ImageFactory
from harness.images import KiB, make_image
from harness.images import sha256_digest as sha256
from harness.servers import OriginProcess
from quayside.cli import scrub as scrub_cli

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover - installed by `make install`
    pytest.skip("skopeo is not installed", allow_module_level=True)


def fetch(url: str, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrub(root: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(scrub_cli.command, ["--root", str(root), "--json", *extra])
    return result.exit_code, json.loads(result.stdout)


def blob_file(root: Path, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"


def flip_byte(path: Path, offset: int = 10) -> bytes:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    return bytes(data)


def test_scrub_quarantines_a_corrupt_layer_and_the_running_origin_answers_404(
    tmp_path: Path, image_factory: ImageFactory
) -> None:
    root = tmp_path / "root"
    origin = OriginProcess(root=root, workdir=tmp_path / "origin").start()
    try:
        shared = image_factory.layer(200 * KiB)
        image = make_image([shared, image_factory.layer(100 * KiB)], seed=21)
        other = make_image([shared], seed=22)
        skopeo.push(image, origin.host, "team/app", "1.0", workdir=tmp_path)
        skopeo.push(other, origin.host, "team/other", "1.0", workdir=tmp_path)
        code, clean = scrub(root)
        assert code == 0 and clean["ok"] and clean["corrupt"] == []
        stored = {*image.blobs(), *other.blobs(), image.digest, other.digest}
        assert clean["blobs"] == len(stored)

        bad = shared.digest
        corrupt_bytes = flip_byte(blob_file(root, bad))
        url = f"{origin.url}/v2/team/app/blobs/{bad}"
        assert fetch(url)[0] == 200  # the origin does not re-hash on every read

        code, dry = scrub(root, "--dry-run")
        assert code == 1 and not dry["ok"]
        [entry] = dry["corrupt"]
        assert entry["digest"] == bad and entry["actual"] == sha256(corrupt_bytes)
        assert entry["repositories"] == ["team/app", "team/other"]
        assert "quarantined_to" not in entry and blob_file(root, bad).is_file()

        code, report = scrub(root)
        assert code == 1
        [entry] = report["corrupt"]
        moved = Path(entry["quarantined_to"])
        assert (moved / "data").read_bytes() == corrupt_bytes
        assert json.loads((moved / "reason.json").read_text())["digest"] == bad
        assert root / "quayside" / "quarantine" in moved.parents
        assert not blob_file(root, bad).exists()

        for method in ("GET", "HEAD"):
            status, body = fetch(url, method)
            assert status == 404
            if method == "GET":
                assert json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
        with pytest.raises(skopeo.SkopeoError):
            skopeo.pull_to_dir(origin.host, "team/other", "1.0", tmp_path / "broken")

        # Pushing again re-creates the blob; the image pulls intact; scrub is clean.
        skopeo.push(other, origin.host, "team/other", "1.0", workdir=tmp_path / "again")
        out = skopeo.pull_to_dir(origin.host, "team/app", "1.0", tmp_path / "healed")
        assert sha256((out / bad.split(":", 1)[1]).read_bytes()) == bad
        code, after = scrub(root)
        assert code == 0 and after["ok"]
        assert origin.server_errors() == []
    finally:
        origin.close()


def test_a_corrupt_manifest_is_quarantined_and_answered_manifest_unknown(
    tmp_path: Path, image_factory: ImageFactory
) -> None:
    root = tmp_path / "root"
    origin = OriginProcess(root=root, workdir=tmp_path / "origin").start()
    try:
        image = image_factory.image(layer_sizes=(64 * KiB,))
        skopeo.push(image, origin.host, "team/app", "1.0", workdir=tmp_path)
        path = blob_file(root, image.digest)
        path.write_bytes(path.read_bytes().replace(b"schemaVersion", b"schemaVersioN"))
        code, report = scrub(root)
        assert code == 1 and [e["digest"] for e in report["corrupt"]] == [image.digest]
        assert report["corrupt"][0]["manifest_of"] == ["team/app"]
        for ref in ("1.0", image.digest):
            status, body = fetch(f"{origin.url}/v2/team/app/manifests/{ref}")
            assert status == 404
            assert json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    finally:
        origin.close()
