"""``quayside replicate``: replication to other registries (``quayside.replication`` targets).

``--reconcile`` compares every tag of the repositories each target takes with the target and
pushes what differs (and, with ``replicate_deletes``, removes tags the origin no longer has),
then the referrers of the tagged manifests (signatures, SBOMs, attestations; see
:mod:`origin.replicareferrers`), as the origin's periodic reconcile does; ``--dry-run`` lists
the drift only. The JSON report adds ``referrers_checked``, ``referrers_pushed`` and
``referrers_deleted`` (``repo@digest``) to the tag fields, and ``indexes_repaired``
(``repo:sha256-<hex>``: referrers tag schema indexes rewritten or removed). ``--status``
shows the jobs and notification events waiting in the on-disk queues. Targets, credentials and
queues come from the origin's ``--config``. Exit status: 0, 1 when a repair failed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import rich_click as click

from quayside.cli.storageopts import load_config, rich_progress


def _pending(directory: str) -> dict[str, int]:
    base = Path(directory)
    if not base.is_dir():
        return {}
    return {d.name: len(list(d.glob("*.json"))) for d in sorted(base.iterdir()) if d.is_dir()}


async def _reconcile(
    cfg: Any, target: str | None, repo: str | None, dry_run: bool, progress: Any
) -> list[Any]:
    from origin.audit import AuditLog
    from origin.replication import Replicator
    from regcore.storage.layout import Layout

    audit = AuditLog(cfg.auth.audit)
    replicator = Replicator(cfg.replication, Layout(cfg.storage.rootdirectory), audit=audit)
    await replicator.open(workers=False)
    try:
        return await replicator.reconcile(
            target=target, repo_glob=repo, dry_run=dry_run, progress=progress
        )
    finally:
        await replicator.close()
        audit.close()


@click.command("replicate")
@click.option("--reconcile", is_flag=True, help="find and repair drift on the targets now")
@click.option("--status", is_flag=True, help="show the jobs and events waiting in the queues")
@click.option("--target", metavar="NAME", help="only this target (default: all)")
@click.option("--repo", metavar="GLOB", help="only repositories matching this glob")
@click.option("--dry-run", is_flag=True, help="with --reconcile: list the drift, change nothing")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option("--config", metavar="FILE", help="the origin's config.yml (names the targets)")
@click.option("--root", metavar="DIR", help="the origin's storage root (default: from config)")
@click.pass_context
def command(
    ctx: click.Context,
    reconcile: bool,
    status: bool,
    target: str | None,
    repo: str | None,
    dry_run: bool,
    as_json: bool,
    config: str | None,
    root: str | None,
) -> None:
    """Replicate to the configured targets: reconcile now, or show the queues."""
    if reconcile == status:
        raise click.UsageError("choose one of --reconcile and --status")
    cfg = load_config(config, root)
    names = [t.name for t in cfg.replication.targets]
    if target is not None and target not in names:
        raise click.UsageError(f"no replication target {target!r} (configured: {names})")
    if status:
        data = {
            "replication": _pending(cfg.replication.directory),
            "notifications": _pending(cfg.notifications.directory),
        }
        if as_json:
            click.echo(json.dumps(data, indent=1, sort_keys=True))
        else:
            for kind, queues in data.items():
                for name, n in queues.items():
                    click.echo(f"{kind} {name}: {n} pending")
        return
    if not names:
        raise click.UsageError("no quayside.replication.targets in the configuration")
    with rich_progress(not as_json) as progress:
        reports = asyncio.run(_reconcile(cfg, target, repo, dry_run, progress))
    data_list = [r.to_dict() for r in reports]
    if as_json:
        click.echo(json.dumps(data_list, indent=1, sort_keys=True))
    else:
        for r in data_list:
            verb = "would push" if dry_run else "pushed"
            click.echo(
                f"{r['target']}: {r['repositories']} repositories, {r['tags_checked']} tags "
                f"checked; {verb} {len(r['pushed'])}, deleted {len(r['deleted'])}"
            )
            for ref in r["pushed"]:
                click.echo(f"  {verb} {ref}")
            for ref in r["deleted"]:
                click.echo(f"  deleted {ref}")
            click.echo(
                f"  referrers: {r['referrers_checked']} checked; {verb} "
                f"{len(r['referrers_pushed'])}, deleted {len(r['referrers_deleted'])}"
            )
            for ref in r["referrers_pushed"]:
                click.echo(f"  {verb} referrer {ref}")
            for ref in r["referrers_deleted"]:
                click.echo(f"  deleted referrer {ref}")
            for ref in r["indexes_repaired"]:
                click.echo(f"  repaired referrers index {ref}")
            for f in r["failed"]:
                click.echo(f"  FAILED {f['ref']}: {f['error']}")
    ctx.exit(0 if all(r.ok for r in reports) else 1)
