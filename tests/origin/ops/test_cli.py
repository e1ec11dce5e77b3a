"""``quayside gc``, ``quayside retention`` and ``quayside ls`` as click commands on an offline
root (the delegated path is covered by test_rootlock.py and the integration tests)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import yaml
from click.testing import CliRunner

from harness.images import KiB, make_image
from quayside.cli.gc import command as gc_command
from quayside.cli.ls import command as ls_command
from quayside.cli.retention import command as retention_command


@pytest.mark.parametrize("command", [gc_command, retention_command, ls_command])
def test_every_command_has_help(command):
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0 and "--root" in result.output


async def offline_root(ops_origin, **kw):
    origin = await ops_origin(**kw)
    keep = make_image(layer_sizes=(4 * KiB,), seed=1)
    gone = make_image(layer_sizes=(4 * KiB,), seed=2)
    await origin.push("team/app", keep, "new")
    await origin.push("team/app", gone, "old")
    return origin, keep, gone


async def invoke(command, args):
    return await asyncio.to_thread(CliRunner().invoke, command, args)


async def test_gc_dry_run_then_run(ops_origin):
    origin, keep, gone = await offline_root(ops_origin)
    assert await origin.delete("team/app", gone.digest) == 202
    await origin.client.close()
    root = str(origin.root)
    dry = await invoke(gc_command, ["--root", root, "--grace", "0s", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.stdout)
    assert report["where"] == "local" and report["dry_run"]
    assert {d for d, _ in report["blobs_deleted"]} == {gone.digest, *gone.blobs()}
    assert origin.has_blob(gone.digest)
    run = await invoke(gc_command, ["--root", root, "--grace", "0s", "-v"])
    assert run.exit_code == 0, run.output
    assert "blobs deleted" in run.stdout and gone.digest in run.stdout
    assert not origin.has_blob(gone.digest) and origin.has_blob(keep.digest)
    bad = await invoke(gc_command, ["--root", root, "--grace", "soon"])
    assert bad.exit_code == 2


async def test_retention_dry_run_lists_then_run_deletes(ops_origin, tmp_path):
    origin, _, _ = await offline_root(ops_origin)
    origin.set_mtime(origin.tag_link("team/app", "old"), time.time() - 3600)
    await origin.client.close()
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": "0.1",
                "storage": {"filesystem": {"rootdirectory": str(origin.root)}},
                "quayside": {"retention": {"policies": [{"repositories": "**", "keep_last": 1}]}},
            }
        )
    )
    dry = await invoke(retention_command, ["--config", str(config), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would delete" in dry.stdout and "team/app" in dry.stdout and "old" in dry.stdout
    assert origin.tag_link("team/app", "old").exists()
    run = await invoke(retention_command, ["--config", str(config), "--json"])
    report = json.loads(run.stdout)
    assert [(d["kind"], d["tag"]) for d in report["deleted"]] == [
        ("tag", "old"),
        ("manifest", None),
    ]
    assert not origin.tag_link("team/app", "old").exists()
    assert "retention.delete_tag" in run.stderr  # audit line (JSON log on stderr)
