"""Online garbage collection in the origin: what is marked, what is swept, and the races a
push can run against the sweep."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from harness.images import KiB, make_image, make_index, make_layer, sha256_digest
from origin.uploadtimes import rfc3339

REPO = "team/app"
GRACE = 60.0  # racing pushes: longer than a push takes on a loaded machine
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def artifact(subject: Any, blob: bytes) -> bytes:
    """An OCI artifact manifest whose ``subject`` is ``subject`` (an Image)."""
    empty = b"{}"
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": sha256_digest(empty),
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.example.sig",
                    "digest": sha256_digest(blob),
                    "size": len(blob),
                }
            ],
            "subject": subject.descriptor(),
        }
    ).encode()


async def test_deleted_image_is_collected_shared_and_tagged_blobs_stay(ops_origin):
    origin = await ops_origin()
    shared = make_layer(32 * KiB, seed=1)
    kept = make_image([shared, make_layer(16 * KiB, seed=2)], seed=10)
    gone = make_image([shared, make_layer(16 * KiB, seed=3)], seed=20)
    await origin.push(REPO, kept, "v1")
    await origin.push("other/app", gone, "v1")
    assert await origin.delete("other/app", gone.digest) == 202

    dry = await origin.gc(dry_run=True)
    only_gone = {gone.layers[1].digest, gone.config_digest, gone.digest}
    assert {d for d, _ in dry.blobs_deleted} == only_gone
    assert all(origin.has_blob(d) for d in only_gone)  # dry run deleted nothing

    report = await origin.gc()
    assert {d for d, _ in report.blobs_deleted} == only_gone
    assert report.bytes_deleted == sum(origin_size for _, origin_size in report.blobs_deleted)
    assert not any(origin.has_blob(d) for d in only_gone)
    assert await origin.pull_ok(REPO, kept, "v1")
    # the dead links of other/app went too: its blobs are no longer served from there
    resp = await origin.client.head(f"/v2/other/app/blobs/{shared.digest}")
    assert resp.status == 404
    assert ("other/app", shared.digest) in {(r, d) for r, d in report.links_pruned}
    assert origin.audit[-1]["action"] == "gc"
    metrics = origin.ops.metrics
    assert metrics.value("gc_blobs_deleted") == 3
    assert metrics.value("gc_runs", {"mode": "dry_run"}) == 1


async def test_blob_uploaded_moments_before_its_manifest_survives_and_the_push_completes(
    ops_origin,
):
    origin = await ops_origin()
    image = make_image(layer_sizes=(8 * KiB, 8 * KiB), seed=30)
    for data in image.blobs().values():
        await origin.blob(REPO, data)
    report = await origin.gc(grace=3600.0)
    assert report.blobs_deleted == [] and report.links_pruned == []
    resp = await origin.put_manifest(REPO, "v1", image.manifest, image.media_type)
    assert resp.status == 201
    assert await origin.pull_ok(REPO, image, "v1")


async def test_old_unreferenced_blob_verified_by_a_pusher_is_kept_for_its_manifest(ops_origin):
    """A pusher HEADs a blob the repository holds (old, unreferenced since its image was
    deleted), skips uploading it, and PUTs its manifest after a gc ran: the HEAD counts as a use
    within the grace period, so the blob is still there."""
    origin = await ops_origin()
    image = make_image(layer_sizes=(8 * KiB,), seed=40)
    await origin.push(REPO, image, "v1")
    assert await origin.delete(REPO, image.digest) == 202
    origin.age_everything(7200)
    for digest in image.blobs():
        assert (await origin.client.head(f"/v2/{REPO}/blobs/{digest}")).status == 200
    report = await origin.gc(grace=600.0)
    assert not {d for d, _ in report.blobs_deleted} & set(image.blobs())
    assert report.links_pruned == []
    resp = await origin.put_manifest(REPO, "v1", image.manifest, image.media_type)
    assert resp.status == 201, await resp.text()
    assert await origin.pull_ok(REPO, image, "v1")


async def test_cross_repository_mount_of_an_unreferenced_blob_survives(ops_origin):
    origin = await ops_origin()
    image = make_image(layer_sizes=(8 * KiB,), seed=50)
    await origin.push("src/app", image, "v1")
    assert await origin.delete("src/app", image.digest) == 202
    origin.age_everything(7200)
    for digest in image.blobs():
        resp = await origin.client.post(
            "/v2/dst/app/blobs/uploads/", params={"mount": digest, "from": "src/app"}
        )
        assert resp.status == 201
    report = await origin.gc(grace=60.0)
    assert all(origin.has_blob(d) for d in image.blobs())
    assert not {d for d, _ in report.blobs_deleted} & set(image.blobs())
    resp = await origin.put_manifest("dst/app", "v1", image.manifest, image.media_type)
    assert resp.status == 201
    assert await origin.pull_ok("dst/app", image, "v1")


async def test_upload_in_progress_keeps_the_blobs_its_push_linked_earlier(ops_origin):
    origin = await ops_origin()
    image = make_image(layer_sizes=(8 * KiB, 8 * KiB), seed=60)
    first, second = image.layers
    await origin.blob(REPO, first.data)  # pushed an hour ago, the push is still going
    await origin.blob(REPO, image.config)
    origin.age_everything(3600)
    resp = await origin.client.post(f"/v2/{REPO}/blobs/uploads/")  # the second layer starts
    assert resp.status == 202
    session = origin.repo_dir(REPO) / "_uploads"
    [upload_dir] = list(session.iterdir())  # the session started just after the first layer
    started = origin.blob_file(first.digest).stat().st_mtime + 1
    (upload_dir / "startedat").write_text(rfc3339(started))
    report = await origin.gc(grace=60.0)
    assert report.blobs_deleted == [] and report.links_pruned == []
    resp = await origin.client.patch(resp.headers["Location"], data=second.data)
    resp = await origin.client.put(resp.headers["Location"], params={"digest": second.digest})
    assert resp.status == 201
    resp = await origin.put_manifest(REPO, "v1", image.manifest, image.media_type)
    assert resp.status == 201
    assert await origin.pull_ok(REPO, image, "v1")


async def test_delete_untagged_keeps_index_children_and_referrers_of_tagged_manifests(
    ops_origin,
):
    origin = await ops_origin()
    index = make_index(layer_sizes=(4 * KiB,), seed=70)
    subject = make_image(layer_sizes=(4 * KiB,), seed=80)
    untagged = make_image(layer_sizes=(4 * KiB,), seed=90)
    await origin.push(REPO, index, "multi")
    await origin.push(REPO, subject, "single")
    await origin.push(REPO, untagged)
    sig = b"signature"
    await origin.blob(REPO, sig)
    await origin.blob(REPO, b"{}")
    referrer = artifact(subject, sig)
    resp = await origin.put_manifest(REPO, sha256_digest(referrer), referrer, OCI_MANIFEST)
    assert resp.status == 201

    report = await origin.gc(delete_untagged=True)
    assert report.manifests_deleted == [(REPO, untagged.digest)]
    assert not origin.has_blob(untagged.digest)
    assert not any(origin.has_blob(d) for d in untagged.blobs())
    assert await origin.pull_ok(REPO, index, "multi")
    for child in index.images:
        assert await origin.pull_ok(REPO, child)
    resp = await origin.client.get(f"/v2/{REPO}/referrers/{subject.digest}")
    assert [m["digest"] for m in (await resp.json())["manifests"]] == [sha256_digest(referrer)]
    assert origin.has_blob(sha256_digest(sig))


async def test_delete_untagged_removes_an_untagged_index_with_its_children(ops_origin):
    origin = await ops_origin()
    index = make_index(layer_sizes=(4 * KiB,), seed=100)
    await origin.push(REPO, index)
    report = await origin.gc(delete_untagged=True)
    assert report.manifests_deleted[0] == (REPO, index.digest)  # parents first
    assert {d for _, d in report.manifests_deleted} == {index.digest} | {
        c.digest for c in index.images
    }
    assert not any(origin.has_blob(d) for d in index.blobs())


async def test_manifest_put_racing_the_sweep_is_never_left_with_a_missing_blob(ops_origin):
    """Pushes re-upload layers of deleted images while collections run back to back (many
    sweep batches, pushes landing between them): every push succeeds and pulls back whole.

    The re-uploaded layers are old files whose images were deleted, so a layer linked after the
    mark scanned its repository is kept only by the sweep's re-check (the touch of its commit
    or manifest PUT), whatever the grace. The grace must still exceed a push's own duration
    (first blob commit to manifest PUT): under load that took up to 5 s, and a grace of 1 s
    then rightly collected a layer unreferenced for longer than the grace (the PUT was refused
    with MANIFEST_BLOB_UNKNOWN, nothing stored). Forced interleavings: test_gc_races.py."""
    before = await ops_origin()
    layers = [make_layer(1 * KiB, seed=1000 + i) for i in range(160)]
    for i in range(0, len(layers), 8):
        image = make_image(layers[i : i + 8], seed=5000 + i)
        await before.push(f"old/r{i}", image, "v1")
        assert await before.delete(f"old/r{i}", image.digest) == 202
    before.age_everything(7200)
    # pushed two hours ago, before a restart: no touch of those pushes is remembered
    origin = await ops_origin(root=before.root)

    async def pusher(i: int) -> tuple[str, Any]:
        image = make_image(layers[i * 4 : i * 4 + 4], seed=9000 + i)
        repo = f"new/r{i}"
        for data in image.blobs().values():
            await origin.blob(repo, data)
            await asyncio.sleep(0.002)
        resp = await origin.put_manifest(repo, "v1", image.manifest, image.media_type)
        return repo, (image, resp.status)

    async def collector(stop: asyncio.Event) -> int:
        runs = 0
        while not stop.is_set():
            await origin.gc(grace=GRACE)
            runs += 1
        return runs

    stop = asyncio.Event()
    gc_task = asyncio.create_task(collector(stop))
    await asyncio.sleep(0.01)
    results = []
    for wave in range(4):  # waves spread the pushes over several collections
        results += await asyncio.gather(*(pusher(wave * 10 + i) for i in range(10)))
    stop.set()
    assert await gc_task >= 2
    await origin.gc(grace=GRACE)
    for repo, (image, status) in results:
        assert status == 201, repo
        assert await origin.pull_ok(repo, image, "v1"), repo
    for i in range(0, len(layers), 8):  # the collections did collect: old images are gone
        assert not origin.has_blob(make_image(layers[i : i + 8], seed=5000 + i).digest)
