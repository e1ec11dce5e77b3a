"""Retention policies: each rule with a case a plausible wrong implementation gets wrong
(name order instead of push time, ignoring pulls, deleting immutable tags, orphaning index
children), plus dry run, bytes freed, audit lines and events."""

from __future__ import annotations

import asyncio
import threading
import time

from harness.images import KiB, make_image, make_index
from origin import state
from origin.app import create_app
from origin.audit import read_events
from regcore.config import load_origin_config

DAY = 86400.0


def policy(**rules) -> dict:
    return {"retention": {"policies": [{"repositories": "team/**", **rules}]}}


async def push_aged(origin, repo: str, items: dict[str, tuple[object, float]]) -> None:
    """Push ``{tag: (image, days ago)}`` and set each tag's push time that many days back."""
    now = time.time()
    for tag, (image, _) in items.items():
        await origin.push(repo, image, tag)
    for tag, (image, days) in items.items():
        when = now - days * DAY
        origin.set_mtime(origin.tag_link(repo, tag), when)
        rev = origin.repo_dir(repo) / "_manifests" / "revisions" / "sha256" / image.digest[7:]
        origin.set_mtime(rev / "link", when)


def deleted_tags(report) -> set[str]:
    return {d.tag for d in report.deleted if d.kind == "tag"}


async def test_keep_last_counts_push_time_not_tag_name(ops_origin):
    origin = await ops_origin(ops=policy(keep_last=2))
    imgs = [make_image(layer_sizes=(KiB,), seed=i) for i in range(4)]
    # pushed in this order: "b" oldest ... "a" newest; name order would keep "c","d"
    await push_aged(
        origin,
        "team/app",
        {"b": (imgs[0], 4), "d": (imgs[1], 3), "c": (imgs[2], 2), "a": (imgs[3], 1)},
    )
    report = await origin.ops.run_retention()
    assert deleted_tags(report) == {"b", "d"}
    tags = (await (await origin.client.get("/v2/team/app/tags/list")).json())["tags"]
    assert tags == ["a", "c"]
    # the manifests of the deleted tags went too, with a reason
    gone = {d.digest: d.reason for d in report.deleted if d.kind == "manifest"}
    assert set(gone) == {imgs[0].digest, imgs[1].digest}
    assert all("tags were deleted" in r for r in gone.values())


async def test_keep_tags_regex_and_age_with_pull_window(ops_origin):
    origin = await ops_origin(
        ops=policy(keep_tags="^release-", tags_older_than="30d", unless_pulled_within="7d")
    )
    imgs = [make_image(layer_sizes=(KiB,), seed=10 + i) for i in range(4)]
    await push_aged(
        origin,
        "team/app",
        {
            "release-1": (imgs[0], 90),  # old but kept by the regex
            "old-pulled": (imgs[1], 60),  # old but pulled yesterday... (now)
            "old": (imgs[2], 60),  # old, never pulled: goes
            "new": (imgs[3], 5),  # young: stays
        },
    )
    resp = await origin.client.get(
        "/v2/team/app/manifests/old-pulled", headers={"Accept": imgs[1].media_type}
    )
    assert resp.status == 200  # recorded in memory only; retention sees it
    assert not (origin.root / "quayside" / "pulls" / "team" / "app.json").exists()
    report = await origin.ops.run_retention()
    assert deleted_tags(report) == {"old"}


async def test_untagged_older_than_keeps_children_of_a_tagged_index(ops_origin):
    origin = await ops_origin(ops=policy(untagged_older_than="7d"))
    index = make_index(layer_sizes=(KiB,), seed=100)
    stale = make_image(layer_sizes=(KiB,), seed=200)
    fresh = make_image(layer_sizes=(KiB,), seed=300)
    await origin.push("team/app", index, "multi")
    await origin.push("team/app", stale)
    await origin.push("team/app", fresh)
    old = time.time() - 30 * DAY
    revs = origin.repo_dir("team/app") / "_manifests" / "revisions" / "sha256"
    for item in (index, *index.images, stale):
        origin.set_mtime(revs / item.digest[7:] / "link", old)
    report = await origin.ops.run_retention()
    assert [(d.kind, d.digest) for d in report.deleted] == [("manifest", stale.digest)]
    for child in index.images:
        assert await origin.pull_ok("team/app", child)
    assert await origin.pull_ok("team/app", fresh)
    assert (await origin.client.get(f"/v2/team/app/manifests/{stale.digest}")).status == 404


async def test_immutable_tags_are_never_deleted_by_retention(ops_origin):
    ops = policy(keep_last=1)
    ops["immutability"] = {"rules": [{"repositories": "team/**", "tags": "^v"}]}
    origin = await ops_origin(ops=ops)
    imgs = [make_image(layer_sizes=(KiB,), seed=400 + i) for i in range(3)]
    await push_aged(
        origin, "team/app", {"v1": (imgs[0], 3), "dev": (imgs[1], 2), "x": (imgs[2], 1)}
    )
    report = await origin.ops.run_retention()
    assert deleted_tags(report) == {"dev"}
    assert [(k.tag, k.reason.startswith("immutable")) for k in report.kept] == [("v1", True)]


async def test_dry_run_lists_and_counts_bytes_a_gc_then_frees(ops_origin):
    origin = await ops_origin(ops=policy(keep_last=1))
    shared = make_image(layer_sizes=(8 * KiB, 4 * KiB), seed=500)
    old = make_image(
        [shared.layers[0], *make_image(layer_sizes=(6 * KiB,), seed=501).layers], seed=502
    )
    await push_aged(origin, "team/app", {"old": (old, 3), "new": (shared, 1)})
    dry = await origin.ops.run_retention(dry_run=True)
    assert deleted_tags(dry) == {"old"}
    # old's manifest, config and own layer; the layer shared with "new" stays
    assert dry.bytes_freed == len(old.manifest) + len(old.config) + old.layers[1].size
    assert origin.tag_link("team/app", "old").exists() and origin.events == []
    report = await origin.ops.run_retention()
    assert report.bytes_freed == dry.bytes_freed
    gc = await origin.gc()
    assert gc.bytes_deleted == dry.bytes_freed
    audit = [e for e in origin.audit if e["action"].startswith("retention.")]
    assert {(e["action"], e["tag"]) for e in audit} == {
        ("retention.delete_tag", "old"),
        ("retention.delete_manifest", None),
    }
    assert all(e["policy"] == "team/**" and e["reason"] for e in audit)
    assert {e["target"]["digest"] for e in origin.events} == {old.digest}


async def test_a_tag_re_pushed_after_the_plan_is_not_deleted(ops_origin):
    """A push lands between the plan (in its worker thread) and the deletions: the re-pushed
    tag is reported as changed and kept."""
    origin = await ops_origin(ops=policy(keep_last=1))
    imgs = [make_image(layer_sizes=(KiB,), seed=600 + i) for i in range(3)]
    await push_aged(origin, "team/app", {"a": (imgs[0], 3), "b": (imgs[1], 2)})
    retention = origin.ops.retention
    planned, go = threading.Event(), threading.Event()
    plan = retention._plan

    def plan_then_wait(report, progress):
        out = plan(report, progress)
        planned.set()
        go.wait(10)
        return out

    retention._plan = plan_then_wait
    runner = asyncio.ensure_future(origin.ops.run_retention())
    assert await asyncio.to_thread(planned.wait, 10)
    await origin.push("team/app", imgs[2], "a")  # "a" is the newest push now
    go.set()
    report = await runner
    assert [d.tag for d in report.changed] == ["a"]
    assert deleted_tags(report) == set()
    assert origin.tag_link("team/app", "a").read_text() == imgs[2].digest


async def test_retention_deletions_reach_the_audit_trail_when_it_is_enabled(
    aiohttp_client, tmp_path
):
    trail = tmp_path / "audit.log"
    config = load_origin_config(
        None,
        {},
        {
            "storage.filesystem.rootdirectory": str(tmp_path / "root"),
            "quayside": {
                "audit": {"enabled": True, "path": str(trail)},
                "retention": {"policies": [{"repositories": "**", "keep_last": 0}]},
            },
        },
    )
    client = await aiohttp_client(create_app(config))  # default audit sink: the trail
    image = make_image(layer_sizes=(KiB,), seed=700)
    for digest, data in image.blobs().items():
        resp = await client.post(
            "/v2/team/app/blobs/uploads/", params={"digest": digest}, data=data
        )
        assert resp.status == 201
    resp = await client.put(
        "/v2/team/app/manifests/v1",
        data=image.manifest,
        headers={"Content-Type": image.media_type},
    )
    assert resp.status == 201
    await client.app[state.OPS].run_retention()
    lines = [e for e in read_events(trail) if e["action"].startswith("retention.")]
    assert [(e["action"], e["reference"], e["actor"]) for e in lines] == [
        ("retention.delete_tag", "v1", "retention"),
        ("retention.delete_manifest", None, "retention"),
    ]
    assert "policy=**" in lines[0]["reason"]
