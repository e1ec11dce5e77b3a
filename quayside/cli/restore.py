"""``quayside restore SNAPSHOT ROOT``: write a backup snapshot into a storage root.

SNAPSHOT is a pointer file ``DEST/snapshots/<time>-<hex>.json`` or a backup directory (its
newest snapshot). Every digest written is verified; links follow their blobs, so an origin
serving ROOT meanwhile never sees a tag without its manifest (see :mod:`origin.restore`).
Exit status: 0, 1 when a blob was missing or corrupt in the backup (the rest is restored),
2 when the snapshot itself is unusable (nothing written).
"""

from __future__ import annotations

import rich_click as click

from quayside.cli.storageopts import print_report, rich_progress


def _render(r: dict[str, object]) -> list[str]:
    lines = [
        f"snapshot {r['snapshot']} ({r['snapshot_digest']}) -> {r['root']}"
        + (" [dry run: nothing written]" if r["dry_run"] else ""),
        f"{r['repositories']} repositories, {r['tags']} tags, {r['manifests']} manifests",
        f"wrote {r['blobs_written']} blobs ({r['bytes_written']} bytes, each verified); "
        f"{r['blobs_present']} already present",
    ]
    for f in r["failed"]:  # type: ignore[attr-defined]
        lines.append(f"FAILED: {f}")
    for s in r["skipped"]:  # type: ignore[attr-defined]
        lines.append(f"not restored: {s}")
    return lines


@click.command("restore")
@click.argument("snapshot", type=click.Path(exists=True))
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--dry-run", is_flag=True, help="check the snapshot and its blobs; write nothing")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.pass_context
def command(ctx: click.Context, snapshot: str, root: str, dry_run: bool, as_json: bool) -> None:
    """Restore SNAPSHOT (a snapshot file, or a backup directory: its newest) into ROOT."""
    from origin.restore import SnapshotInvalid, run_restore

    with rich_progress(not as_json) as progress:
        try:
            report = run_restore(snapshot, root, dry_run=dry_run, progress=progress)
        except SnapshotInvalid as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except OSError as exc:
            raise click.ClickException(f"restore failed: {exc}") from None
    print_report(report, as_json, _render)
    ctx.exit(0 if report.ok else 1)
