"""Replication from a real origin process to a real docker-registry (registry:2, htpasswd auth,
credentials from the origin's config): identical digests after pushes, cross-repository mounts,
deletes replicated, and a target that was down catches up (queued jobs, then reconcile)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from harness import oci_http, skopeo
from harness.fixtures import ImageFactory
from harness.images import Image, ImageIndex, KiB, make_image
from harness.procs import wait_until
from harness.registry import DockerRegistry
from harness.servers import OriginProcess
from quayside.cli import replicate as replicate_cli
from regcore.auth.htpasswd import hash_password, write_entries

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover - installed by `make install`
    pytest.skip("skopeo is not installed", allow_module_level=True)

TARGET_CREDS = ("replicator", "rep-s3cret")


@pytest.fixture
def target(registry_factory: Any, tmp_path: Path) -> DockerRegistry:
    users = tmp_path / "target-htpasswd"
    write_entries(users, {TARGET_CREDS[0]: hash_password(TARGET_CREDS[1], cost=4)})
    return registry_factory(htpasswd=users)


def start_origin(tmp: Path, target: DockerRegistry, **extra: Any) -> OriginProcess:
    pw = tmp / "target.pw"
    pw.write_text(TARGET_CREDS[1] + "\n")
    config = {
        "storage": {"delete": {"enabled": True}},
        "quayside": {
            "replication": {
                "reconcile": {"interval": extra.pop("interval", 0)},
                "targets": [
                    {
                        "name": "dr",
                        "url": target.url,
                        "username": TARGET_CREDS[0],
                        "password_file": str(pw),
                        "repositories": ["team/*"],
                        "replicate_deletes": True,
                        "backoff": "300ms",
                        "timeout": "10s",
                    }
                ],
            }
        },
    }
    return OriginProcess(root=tmp / "root", workdir=tmp / "origin", config=config).start()


def target_manifest(target: DockerRegistry, repo: str, ref: str) -> bytes | None:
    user, pw = TARGET_CREDS
    try:
        return skopeo.inspect_raw(
            f"{target.host}/{repo}{'@' if ':' in ref else ':'}{ref}", creds=f"{user}:{pw}"
        )
    except skopeo.SkopeoError as exc:
        if "manifest unknown" in exc.stderr.lower() or "not found" in exc.stderr.lower():
            return None
        raise


def target_delete(target: DockerRegistry, repo: str, digest: str) -> None:
    auth = base64.b64encode(":".join(TARGET_CREDS).encode()).decode()
    req = urllib.request.Request(
        f"{target.url}/v2/{repo}/manifests/{digest}",
        method="DELETE",
        headers={"Authorization": f"Basic {auth}"},
    )
    assert urllib.request.urlopen(req, timeout=10).status == 202


def target_request(
    target: DockerRegistry,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request to the target, with its basic credentials."""
    auth = base64.b64encode(":".join(TARGET_CREDS).encode()).decode()
    req = urllib.request.Request(
        f"{target.url}{path}",
        method=method,
        data=body,
        headers={"Authorization": f"Basic {auth}", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


ACCEPT_ALL = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


MID_WRITE = "<docker-registry answered 5xx>"  # equal to no digest and not None


def polled_digest(target: DockerRegistry, repo: str, ref: str) -> str | None:
    """:func:`target_digest` for a poll of a tag a job is rewriting: docker-registry's
    filesystem driver rewrites the tag's link file in place (truncate, then write), and a
    HEAD racing that PUT answers 500. That is :data:`MID_WRITE`, so the poll goes on."""
    status, headers, _ = target_request(
        target, "HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT_ALL}
    )
    if status >= 500:
        return MID_WRITE
    if status == 404:
        return None
    assert status == 200, status
    return headers["Docker-Content-Digest"]


def target_digest(target: DockerRegistry, repo: str, ref: str) -> str | None:
    """The digest ``repo:ref`` resolves to on the target (HEAD), None on a 404."""
    status, headers, _ = target_request(
        target, "HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT_ALL}
    )
    if status == 404:
        return None
    assert status == 200, status
    return headers["Docker-Content-Digest"]


def target_tag(target: DockerRegistry, repo: str, tag: str, item: Image | ImageIndex) -> None:
    """Tag ``item`` (already in ``repo`` there) on the target only, as another client would."""
    status, _, body = target_request(
        target,
        "PUT",
        f"/v2/{repo}/manifests/{tag}",
        body=item.manifest,
        headers={"Content-Type": item.media_type},
    )
    assert status == 201, body


def origin_delete(origin: OriginProcess, repo: str, ref: str) -> None:
    req = urllib.request.Request(f"{origin.url}/v2/{repo}/manifests/{ref}", method="DELETE")
    assert urllib.request.urlopen(req, timeout=10).status == 202


def pending(tmp: Path) -> list[Path]:
    return list((tmp / "root" / "quayside" / "replication" / "dr").glob("*.json"))


def jobs(origin: OriginProcess, result: str) -> float:
    return origin.metric("quayside_origin_replication_jobs", target="dr", result=result)


def replicated(target: DockerRegistry, items: dict[str, Image | ImageIndex]) -> bool:
    """Every ``repo:tag`` of ``items`` has its manifest on the target (for polls: a 500 from
    docker-registry while a job rewrites the tag's link file in place, see
    :func:`polled_digest`, is "not yet")."""
    try:
        return all(
            target_manifest(target, *ref.rsplit(":", 1)) == item.manifest
            for ref, item in items.items()
        )
    except skopeo.SkopeoError as exc:
        if "500 Internal Server Error" in exc.stderr:
            return False
        raise


def test_pushes_replicate_to_docker_registry_with_identical_digests(
    tmp_path: Path, target: DockerRegistry, image_factory: ImageFactory
) -> None:
    origin = start_origin(tmp_path, target)
    try:
        shared = image_factory.layer(300 * KiB)
        items: dict[str, Image | ImageIndex] = {
            "team/app:1.0": make_image([shared, image_factory.layer(100 * KiB)], seed=31),
            "team/multi:all": image_factory.index(layer_sizes=(50 * KiB,)),
            "team/lists:v2": image_factory.index(flavour="docker", layer_sizes=(40 * KiB,)),
        }
        for ref, item in items.items():
            skopeo.push(item, origin.host, *ref.rsplit(":", 1), workdir=tmp_path)
        skopeo.push(image_factory.image(), origin.host, "private/x", "1", workdir=tmp_path)
        assert wait_until(lambda: replicated(target, items), timeout=60)
        for ref, item in items.items():
            if isinstance(item, ImageIndex):
                repo = ref.split(":")[0]
                for child in item.images:
                    assert target_manifest(target, repo, child.digest) == child.manifest
        assert target_manifest(target, "private/x", "1") is None  # not in the globs

        # A second repository sharing a layer: mounted on the target, not uploaded again.
        mounted_before = origin.metric("quayside_origin_replication_blobs", how="mounted")
        second = make_image([shared], seed=32)
        skopeo.push(second, origin.host, "team/second", "1", workdir=tmp_path)
        assert wait_until(lambda: replicated(target, {"team/second:1": second}), timeout=30)
        assert origin.metric("quayside_origin_replication_blobs", how="mounted") > mounted_before
        pulled = skopeo.pull_to_dir(
            target.host,
            "team/second",
            "1",
            tmp_path / "second",
            extra=["--src-creds=" + ":".join(TARGET_CREDS)],
        )
        assert (pulled / shared.digest.split(":")[1]).read_bytes() == shared.data

        # Deletes are replicated (this target has replicate_deletes).
        origin_delete(origin, "team/app", items["team/app:1.0"].digest)
        assert wait_until(lambda: target_manifest(target, "team/app", "1.0") is None, timeout=30)
        # By tag: registry:2 deletes by digest only; the other tag on that digest stays.
        lists = items["team/lists:v2"]
        skopeo.push(lists, origin.host, "team/lists", "keep", workdir=tmp_path / "keep")
        assert wait_until(lambda: replicated(target, {"team/lists:keep": lists}), timeout=30)
        origin_delete(origin, "team/lists", "v2")
        assert wait_until(lambda: target_manifest(target, "team/lists", "v2") is None, timeout=30)
        assert wait_until(lambda: replicated(target, {"team/lists:keep": lists}), timeout=30)
        assert wait_until(lambda: not pending(tmp_path), timeout=10)
        assert jobs(origin, "failed") == 0 and jobs(origin, "ok") >= 5
        assert origin.metric("quayside_origin_replication_bytes") > 0

        audit = [
            json.loads(line)
            for line in (tmp_path / "root" / "quayside" / "audit.log").read_text().splitlines()
        ]
        replicate_lines = [e for e in audit if e["action"] == "replicate"]
        assert {(e["repository"], e["result"]) for e in replicate_lines} >= {
            ("team/app", "ok"),
            ("team/second", "ok"),
        }
        assert all(e["actor"] == "system:replication" for e in replicate_lines)
        assert TARGET_CREDS[1] not in origin.log_text()
    finally:
        origin.close()
    assert origin.server_errors() == []


def _gone_and_kept(
    origin: OriginProcess, target: DockerRegistry, image_factory: ImageFactory, tmp_path: Path
) -> Image:
    """One image pushed to the origin as ``team/tags:gone`` and ``:kept``, both replicated."""
    image = image_factory.image(layer_sizes=(32 * KiB,))
    for tag in ("gone", "kept"):
        skopeo.push(image, origin.host, "team/tags", tag, workdir=tmp_path / tag)
    both = {"team/tags:gone": image, "team/tags:kept": image}
    assert wait_until(lambda: replicated(target, both), timeout=30)
    return image


def test_tag_delete_on_docker_registry_removes_that_tag_only(
    tmp_path: Path, target: DockerRegistry, image_factory: ImageFactory
) -> None:
    """registry:2 refuses DELETE by tag, and deleting the manifest by digest would drop every
    tag on it: the replicated delete removes the one tag, while the origin's other tag on that
    digest and a tag only the target has keep resolving to it (also during the delete)."""
    origin = start_origin(tmp_path, target)
    try:
        image = _gone_and_kept(origin, target, image_factory, tmp_path)
        assert wait_until(lambda: not pending(tmp_path), timeout=10)
        target_tag(target, "team/tags", "theirs", image)  # pushed to the target only
        ok_before = jobs(origin, "ok")

        missed: list[str] = []
        stop = threading.Event()

        def watch() -> None:  # a puller of the other tags while the delete replicates
            while not stop.is_set():
                for tag in ("kept", "theirs"):
                    if target_digest(target, "team/tags", tag) != image.digest:
                        missed.append(tag)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            origin_delete(origin, "team/tags", "gone")
            assert wait_until(lambda: polled_digest(target, "team/tags", "gone") is None, 30)
            assert wait_until(lambda: not pending(tmp_path), timeout=10)
        finally:
            stop.set()
            watcher.join(timeout=15)

        status, _, body = target_request(target, "GET", "/v2/team/tags/manifests/gone")
        assert status == 404
        assert [e["code"] for e in json.loads(body)["errors"]] == ["MANIFEST_UNKNOWN"]
        assert target_digest(target, "team/tags", "kept") == image.digest
        assert target_digest(target, "team/tags", "theirs") == image.digest
        assert target_manifest(target, "team/tags", image.digest) == image.manifest
        assert missed == []
        status, _, body = target_request(target, "GET", "/v2/team/tags/tags/list")
        assert status == 200 and sorted(json.loads(body)["tags"]) == ["kept", "theirs"]
        assert jobs(origin, "failed") == 0 and jobs(origin, "ok") == ok_before + 1
        audit = [
            json.loads(line)
            for line in (tmp_path / "root" / "quayside" / "audit.log").read_text().splitlines()
        ]
        assert [
            e["result"]
            for e in audit
            if e["action"] == "replicate"
            and e.get("reference") == "gone"
            and "delete" in e.get("reason", "")
        ] == ["ok"]
    finally:
        origin.close()
    assert origin.server_errors() == []


def test_tag_delete_refused_by_a_docker_registry_without_deletes_leaves_the_tag_as_it_was(
    tmp_path: Path, registry_factory: Any, image_factory: ImageFactory
) -> None:
    """A target with deletes turned off refuses every DELETE: the job finds that out before
    writing a placeholder, fails (dropped, reconcile retries) and leaves both tags as they
    were."""
    users = tmp_path / "target-htpasswd"
    write_entries(users, {TARGET_CREDS[0]: hash_password(TARGET_CREDS[1], cost=4)})
    target = registry_factory(
        htpasswd=users, extra_config={"storage": {"delete": {"enabled": False}}}
    )
    origin = start_origin(tmp_path, target)
    try:
        image = _gone_and_kept(origin, target, image_factory, tmp_path)
        origin_delete(origin, "team/tags", "gone")
        assert wait_until(lambda: jobs(origin, "failed") == 1, timeout=30)
        assert wait_until(lambda: not pending(tmp_path), timeout=10)
        assert target_digest(target, "team/tags", "gone") == image.digest
        assert target_digest(target, "team/tags", "kept") == image.digest
        status, _, body = target_request(target, "GET", "/v2/team/tags/tags/list")
        assert status == 200 and sorted(json.loads(body)["tags"]) == ["gone", "kept"]
    finally:
        origin.close()


def test_reconcile_removes_a_target_only_tag_without_touching_its_manifest(
    tmp_path: Path, target: DockerRegistry, image_factory: ImageFactory
) -> None:
    """An extra tag on the target (here on a child of a replicated index) is removed by
    reconcile with replicate_deletes; on registry:2 that must not delete the manifest by digest,
    which would break the index that lists it."""
    origin = start_origin(tmp_path, target)
    try:
        index = image_factory.index(layer_sizes=(32 * KiB,))
        skopeo.push(index, origin.host, "team/multi", "all", workdir=tmp_path)
        assert wait_until(lambda: replicated(target, {"team/multi:all": index}), timeout=60)
        assert wait_until(lambda: not pending(tmp_path), timeout=10)
    finally:
        origin.close()
    child = index.images[0]
    target_tag(target, "team/multi", "stray", child)

    runner = CliRunner()
    args = ["--reconcile", "--json", "--config", str(origin._written_config)]
    done = runner.invoke(replicate_cli.command, [*args, "--root", str(tmp_path / "root")])
    assert done.exit_code == 0, done.output
    [report] = json.loads(done.stdout)
    assert report["deleted"] == ["team/multi:stray"] and report["failed"] == []

    assert target_digest(target, "team/multi", "stray") is None
    assert target_digest(target, "team/multi", "all") == index.digest
    for image in index.images:
        assert target_manifest(target, "team/multi", image.digest) == image.manifest
    status, _, body = target_request(target, "GET", "/v2/team/multi/tags/list")
    assert status == 200 and json.loads(body)["tags"] == ["all"]


def test_target_down_for_a_while_then_queue_and_reconcile_repair(
    tmp_path: Path, target: DockerRegistry, image_factory: ImageFactory
) -> None:
    origin = start_origin(tmp_path, target)
    try:
        target.stop()
        items = {f"team/down{i}:v1": image_factory.image(layer_sizes=(64 * KiB,)) for i in range(3)}
        for ref, item in items.items():
            skopeo.push(item, origin.host, *ref.rsplit(":", 1), workdir=tmp_path)
        assert wait_until(
            lambda: (
                origin.metric("quayside_origin_replication_attempts", target="dr", result="failed")
                >= 3
            ),
            timeout=30,
        )
        assert len(pending(tmp_path)) == 3  # the jobs wait on disk

        target.start()
        assert wait_until(lambda: replicated(target, items), timeout=60)
        assert wait_until(lambda: not pending(tmp_path), timeout=10)

        # Drift the queue cannot see: a manifest deleted on the target, and pushes made while
        # the origin ran without replication. `quayside replicate --reconcile` repairs both.
        target_delete(target, "team/down0", items["team/down0:v1"].digest)
        origin.stop()
        quiet = OriginProcess(root=tmp_path / "root", workdir=tmp_path / "quiet").start()
        late = image_factory.image(layer_sizes=(32 * KiB,))
        skopeo.push(late, quiet.host, "team/late", "v1", workdir=tmp_path)
        quiet.close()
        items["team/late:v1"] = late

        config = str(origin._written_config)
        runner = CliRunner()
        dry = runner.invoke(
            replicate_cli.command,
            [
                "--reconcile",
                "--dry-run",
                "--json",
                "--config",
                config,
                "--root",
                str(tmp_path / "root"),
            ],
        )
        assert dry.exit_code == 0, dry.output
        [report] = json.loads(dry.stdout)
        assert sorted(report["pushed"]) == ["team/down0:v1", "team/late:v1"]
        assert target_manifest(target, "team/late", "v1") is None  # dry run: nothing pushed

        done = runner.invoke(
            replicate_cli.command,
            ["--reconcile", "--json", "--config", config, "--root", str(tmp_path / "root")],
        )
        assert done.exit_code == 0, done.output
        assert sorted(json.loads(done.stdout)[0]["pushed"]) == ["team/down0:v1", "team/late:v1"]
        assert replicated(target, items)
        again = runner.invoke(
            replicate_cli.command,
            ["--reconcile", "--json", "--config", config, "--root", str(tmp_path / "root")],
        )
        assert json.loads(again.stdout)[0]["pushed"] == []
    finally:
        origin.close()


def test_periodic_reconcile_repairs_drift_on_its_own(
    tmp_path: Path, target: DockerRegistry, image_factory: ImageFactory
) -> None:
    origin = start_origin(tmp_path, target, interval="1s")
    try:
        image = image_factory.image(layer_sizes=(32 * KiB,))
        skopeo.push(image, origin.host, "team/drift", "v1", workdir=tmp_path)
        assert wait_until(lambda: replicated(target, {"team/drift:v1": image}), timeout=30)
        target_delete(target, "team/drift", image.digest)
        assert target_manifest(target, "team/drift", "v1") is None
        assert wait_until(lambda: replicated(target, {"team/drift:v1": image}), timeout=30)
        assert wait_until(
            lambda: origin.metric("quayside_origin_replication_drift_repaired", target="dr") >= 1,
            timeout=10,
        )  # counted when the reconcile run ends, just after the push
    finally:
        origin.close()


def test_replication_to_a_second_quayside_origin(
    tmp_path: Path, image_factory: ImageFactory
) -> None:
    second = OriginProcess(
        root=tmp_path / "second-root",
        workdir=tmp_path / "second",
        env={"REGISTRY_STORAGE_DELETE_ENABLED": "true"},
    ).start()
    config = {
        "storage": {"delete": {"enabled": True}},
        "quayside": {
            "replication": {
                "targets": [
                    {
                        "name": "dr",
                        "url": second.url,
                        "repositories": ["*"],
                        "replicate_deletes": True,
                    }
                ]
            }
        },
    }
    origin = OriginProcess(root=tmp_path / "root", workdir=tmp_path / "origin", config=config)
    origin.start()
    try:
        image = image_factory.image(layer_sizes=(128 * KiB,))
        index = image_factory.index(layer_sizes=(32 * KiB,))
        skopeo.push(image, origin.host, "a/img", "1", workdir=tmp_path)
        skopeo.push(image, origin.host, "a/img", "2", workdir=tmp_path)
        skopeo.push(index, origin.host, "b/idx", "all", workdir=tmp_path)

        def on_second(ref: str) -> bytes | None:
            try:
                return skopeo.inspect_raw(f"{second.host}/{ref}")
            except skopeo.SkopeoError:
                return None

        assert wait_until(
            lambda: (
                on_second("a/img:1") == image.manifest
                and on_second("a/img:2") == image.manifest
                and on_second("b/idx:all") == index.manifest
            ),
            timeout=60,
        )
        origin_delete(origin, "a/img", "1")  # a tag delete the second origin does natively
        assert wait_until(lambda: on_second("a/img:1") is None, timeout=30)
        assert on_second("a/img:2") == image.manifest
    finally:
        origin.close()
        second.close()
    assert origin.server_errors() == [] and second.server_errors() == []


def test_manifest_put_by_digest_with_tag_parameters_replicates_the_tags(
    tmp_path: Path, target: DockerRegistry, image_factory: ImageFactory
) -> None:
    """``PUT /v2/<name>/manifests/<digest>?tag=v9&tag=v10`` (OCI 1.1): the push events name
    each tag, so the replication jobs put the manifest under both tags on the target without
    a reconcile (this origin runs none: ``reconcile.interval`` 0)."""
    origin = start_origin(tmp_path, target)
    try:
        image = image_factory.image()

        async def push() -> dict[str, str]:
            async with aiohttp.ClientSession() as session:
                for data in image.blobs().values():
                    await oci_http.push_blob(session, origin.url, "team/ptag", data)
                async with session.put(
                    f"{origin.url}/v2/team/ptag/manifests/{image.digest}?tag=v9&tag=v10",
                    data=image.manifest,
                    headers={"Content-Type": image.media_type},
                ) as resp:
                    assert resp.status == 201, await resp.text()
                    return dict(resp.headers)

        headers = asyncio.run(push())
        assert headers["OCI-Tag"] == "v9, v10"
        assert wait_until(
            lambda: (
                polled_digest(target, "team/ptag", "v9") == image.digest
                and polled_digest(target, "team/ptag", "v10") == image.digest
            ),
            timeout=30,
        ), (target_digest(target, "team/ptag", "v9"), target_digest(target, "team/ptag", "v10"))
        assert target_manifest(target, "team/ptag", "v9") == image.manifest
        assert wait_until(lambda: not pending(tmp_path), timeout=10)
        assert jobs(origin, "failed") == 0
        assert origin.metric("quayside_origin_replication_reconcile_runs") == 0
    finally:
        origin.close()
    assert origin.server_errors() == []
