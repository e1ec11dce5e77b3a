"""``quayside gc`` against a serving origin while skopeo pushes and cross-repository mounts run.

One origin process; two images are pushed and then deleted (their blobs become garbage once
older than the grace period). Then ten skopeo jobs run at once — four pushes of new images, one
push of an image rebuilt from a deleted image's layers, five registry-to-registry copies within
the origin (cross-repository mounts) — while the CLI collects again and again (the CLI sends
each run to the serving origin's admin endpoint). Afterwards every pushed image pulls back
byte for byte, the deleted images' blobs are gone from disk (except layers the rebuilt image
uses again), and the origin answered no request with a 5xx.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from harness import skopeo
from harness.images import Image, ImageIndex, KiB, make_image
from harness.images import sha256_digest as sha256

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover
    pytest.skip("skopeo is required", allow_module_level=True)

REPO_ROOT = Path(__file__).resolve().parents[2]
GRACE = 2.0


def gc_cli(root: Path, *flags: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "quayside.cli.gc", "--root", str(root), "--json", *flags],
        capture_output=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def blob_file(root: Path, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def pulled_intact(host: str, repo: str, item: Image | ImageIndex, tag: str, work: Path) -> None:
    assert skopeo.inspect_raw(f"{host}/{repo}:{tag}") == item.manifest, f"{repo}:{tag}"
    children = item.images if isinstance(item, ImageIndex) else (item,)
    for child in children:
        target = work / f"pull-{repo.replace('/', '-')}-{child.digest[7:19]}"
        skopeo.pull_to_dir(host, repo, child.digest, target)
        assert (target / "manifest.json").read_bytes() == child.manifest
        for digest, data in child.blobs().items():
            assert sha256((target / digest[7:]).read_bytes()) == digest == sha256(data)


def test_gc_during_ten_concurrent_skopeo_pushes_and_cross_repository_mounts(
    servers, image_factory, tmp_path
):
    origin = servers.origin(env={"REGISTRY_STORAGE_DELETE_ENABLED": "true"})
    host, root = origin.host, origin.root
    src = tmp_path / "src"
    keep = image_factory.image(layer_sizes=(96 * KiB, 32 * KiB))
    keep_index = image_factory.index(layer_sizes=(32 * KiB,))
    skopeo.push(keep, host, "team/keep", "a", workdir=src)
    skopeo.push(keep_index, host, "team/keep", "idx", workdir=src)
    gone = [image_factory.image(layer_sizes=(64 * KiB, 16 * KiB)) for _ in range(2)]
    for i, image in enumerate(gone):
        skopeo.push(image, host, f"team/gone{i}", "v1", workdir=src)
        url = f"{origin.url}/v2/team/gone{i}/manifests/{image.digest}"
        with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10) as r:
            assert r.status == 202
    time.sleep(GRACE + 0.5)  # the deleted images are now older than the grace period

    new = [image_factory.image(layer_sizes=(64 * KiB, 32 * KiB)) for _ in range(4)]
    reborn = make_image(gone[1].layers, seed=424242)  # a deleted image's layers, pushed again
    pushed: list[tuple[str, Image | ImageIndex]] = [
        (f"team/new{i}", img) for i, img in enumerate(new)
    ]
    pushed.append(("team/reborn", reborn))
    copies: list[tuple[str, Image | ImageIndex, str]] = [
        (f"team/copy{i}", keep if i < 3 else keep_index, "a" if i < 3 else "idx") for i in range(5)
    ]

    def push_job(repo: str, item: Image | ImageIndex) -> Callable[[], None]:
        return lambda: skopeo.push(item, host, repo, "v1", workdir=src / repo.replace("/", "-"))

    def copy_job(repo: str, tag: str) -> Callable[[], None]:
        return lambda: skopeo.copy(
            f"docker://{host}/team/keep:{tag}",
            f"docker://{host}/{repo}:v1",
            multi_arch="all",
            preserve_digests=True,
        )

    jobs = [push_job(r, i) for r, i in pushed] + [copy_job(r, t) for r, _, t in copies]
    assert len(jobs) == 10
    reports = []
    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(job) for job in jobs]
        while not all(f.done() for f in futures) or len(reports) < 2:
            reports.append(gc_cli(root, "--grace", f"{GRACE}s"))
        for f in futures:
            f.result()  # every push and copy succeeded
    during = len(reports)
    reports.append(gc_cli(root, "--grace", f"{GRACE}s"))
    print(f"gc runs during the pushes: {during}, spared: {sum(r['spared'] for r in reports)}")
    assert {r["where"] for r in reports} == {origin.url}  # ran inside the serving origin

    work = tmp_path / "pulls"
    for repo, item in pushed:
        pulled_intact(host, repo, item, "v1", work)
    for repo, item, _ in copies:
        pulled_intact(host, repo, item, "v1", work)
    pulled_intact(host, "team/keep", keep, "a", work)
    pulled_intact(host, "team/keep", keep_index, "idx", work)
    assert origin.metric("quayside_origin_blobs_mounted") > 0  # the copies mounted

    deleted = {d for r in reports for d, _ in r["blobs_deleted"]}
    only_gone = {gone[0].digest, gone[0].config_digest, *gone[0].layer_digests}
    only_gone |= {gone[1].digest, gone[1].config_digest}
    assert only_gone <= deleted
    assert not any(blob_file(root, d).exists() for d in only_gone)
    assert all(blob_file(root, d).exists() for d in gone[1].layer_digests)  # reborn's layers
    assert origin.server_errors() == []
