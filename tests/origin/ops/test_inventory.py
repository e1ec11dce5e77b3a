"""Inventory (``quayside ls``) and pull times recorded in memory, flushed in batches."""

from __future__ import annotations

import asyncio
import json
import time

from click.testing import CliRunner

from harness.images import KiB, make_image
from origin.inventory import build_inventory
from origin.pulls import read_pulls
from quayside.cli.ls import command as ls_command


async def test_pull_times_are_batched_and_flushed_at_shutdown(ops_origin):
    origin = await ops_origin(ops={"inventory": {"pulls_flush_interval": "1h"}})
    image = make_image(layer_sizes=(KiB,), seed=1)
    await origin.push("team/app", image, "v1")
    before = time.time()
    for _ in range(20):
        resp = await origin.client.get(
            "/v2/team/app/manifests/v1", headers={"Accept": image.media_type}
        )
        assert resp.status == 200
    pulls = origin.root / "quayside" / "pulls" / "team" / "app.json"
    assert not pulls.exists()  # no disk write per request
    await origin.client.close()  # shutdown flushes
    times = read_pulls(origin.ops.layout, "team/app")
    assert times.tags["v1"] >= before and times.manifests[image.digest] >= before


async def test_pull_times_are_flushed_periodically(ops_origin):
    origin = await ops_origin(ops={"inventory": {"pulls_flush_interval": "0.2s"}})
    image = make_image(layer_sizes=(KiB,), seed=2)
    await origin.push("team/app", image, "v1")
    resp = await origin.client.head(f"/v2/team/app/manifests/{image.digest}")
    assert resp.status == 200
    pulls = origin.root / "quayside" / "pulls" / "team" / "app.json"
    for _ in range(50):
        if pulls.exists():
            break
        await asyncio.sleep(0.05)
    assert image.digest in json.loads(pulls.read_text())["manifests"]


async def test_inventory_sizes_unique_and_shared_and_namespace_usage(ops_origin):
    origin = await ops_origin(ops={"quotas": {"namespaces": {"team": "10MiB"}}})
    a = make_image(layer_sizes=(16 * KiB, 8 * KiB), seed=10)
    b = make_image([a.layers[0]], seed=11)
    await origin.push("team/a", a, "v1")
    await origin.push("team/b", b, "v1")
    await origin.push("team/b", b, "v2")
    await origin.push("solo/c", make_image(layer_sizes=(4 * KiB,), seed=12), "x")
    await origin.client.get("/v2/team/a/manifests/v1", headers={"Accept": a.media_type})
    await origin.ops.pulls.flush()
    inv = await asyncio.to_thread(
        build_inventory, origin.ops.layout, "team/*", quotas=origin.ops.config.quotas
    )
    repos = {r.name: r for r in inv.repositories}
    assert set(repos) == {"team/a", "team/b"}
    shared = a.layers[0].size
    assert repos["team/a"].shared_bytes == shared
    assert repos["team/a"].unique_bytes == len(a.manifest) + len(a.config) + a.layers[1].size
    assert repos["team/b"].unique_bytes == len(b.manifest) + len(b.config)
    assert [t.tag for t in repos["team/b"].tags] == ["v1", "v2"]
    assert repos["team/a"].tags[0].pulled is not None and repos["team/b"].tags[0].pulled is None
    assert repos["team/a"].manifests[0].size == a.total_size
    total = repos["team/a"].total_bytes + repos["team/b"].total_bytes - shared
    assert inv.namespaces == {"team": {"bytes": total, "limit": 10 * 1024 * 1024}}


async def test_ls_command_json_and_table(ops_origin, tmp_path):
    origin = await ops_origin()
    image = make_image(layer_sizes=(KiB,), seed=20)
    await origin.push("team/app", image, "v1")
    await origin.client.close()  # an offline root: ls reads the disk
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, ls_command, ["--root", str(origin.root), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    [repo] = doc["repositories"]
    assert repo["name"] == "team/app" and repo["tags"][0]["digest"] == image.digest
    assert repo["unique_bytes"] == image.total_size
    result = await asyncio.to_thread(runner.invoke, ls_command, ["--root", str(origin.root)])
    assert result.exit_code == 0 and "team/app" in result.stdout and ":v1" in result.stdout
