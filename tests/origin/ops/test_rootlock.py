"""Who runs maintenance on a root: a serving origin (the CLI delegates to it) or the CLI
itself (holding the root's lock, so an origin starting meanwhile waits)."""

from __future__ import annotations

import asyncio

from harness.images import KiB, make_image
from origin.opsclient import run_job
from origin.rootlock import RootLock, publish
from regcore.config import load_origin_config
from regcore.storage.layout import Layout


async def test_cli_run_is_delegated_to_the_serving_origin(ops_origin):
    origin = await ops_origin()
    image = make_image(layer_sizes=(4 * KiB,), seed=1)
    await origin.push("team/app", image, "v1")
    assert await origin.delete("team/app", image.digest) == 202
    url = str(origin.client.make_url("")).rstrip("/")
    publish(origin.ops.layout, url)
    config = load_origin_config(None, {}, {"storage.filesystem.rootdirectory": str(origin.root)})
    seen: list[dict] = []
    report, where = await run_job(
        config, "gc", {"dry_run": False, "grace": 0.0}, on_progress=seen.append
    )
    assert where == url
    assert {d for d, _ in report["blobs_deleted"]} == {image.digest, *image.blobs()}
    assert seen and all("phase" in p for p in seen)  # progress lines streamed first


async def test_origin_start_waits_for_an_offline_run_holding_the_lock(ops_origin, tmp_path):
    root = tmp_path / "root"
    lock = RootLock(Layout(root))
    assert lock.try_exclusive()  # what `quayside gc` holds while it collects offline
    try:
        starting = asyncio.ensure_future(ops_origin(root=root))
        await asyncio.sleep(0.3)
        assert not starting.done()
    finally:
        lock.release()
    origin = await asyncio.wait_for(starting, 10)
    assert (await origin.client.get("/v2/")).status == 200
    # and while it serves, the CLI cannot take the root for itself
    other = RootLock(Layout(root))
    assert not other.try_exclusive()
    other.release()


async def test_offline_run_when_no_origin_serves_the_root(tmp_path):
    root = tmp_path / "root"
    config = load_origin_config(None, {}, {"storage.filesystem.rootdirectory": str(root)})
    report, where = await run_job(config, "gc", {"dry_run": True, "grace": 0.0})
    assert where == "local" and report["dry_run"] is True
    assert RootLock(Layout(root)).try_exclusive()  # released afterwards
