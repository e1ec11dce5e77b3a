"""``quayside backup DEST``: an incremental, content-addressed backup of the origin's root.

Blobs are copied once ever (``DEST/blobs/sha256/..``, verified while copied); each run adds a
snapshot (tags, manifest revisions, blob links of every repository) with a digest of its own,
named by ``DEST/snapshots/<time>-<hex>.json``. Safe while the origin serves pushes (see
:mod:`origin.backup`). Exit status: 0, or 1 when something had to be left out (a blob corrupt
or gone at the source: run ``quayside scrub``).
"""

from __future__ import annotations

import rich_click as click

from quayside.cli.storageopts import print_report, resolve_root, rich_progress


def _render(r: dict[str, object]) -> list[str]:
    lines = [
        f"snapshot {r['snapshot']} ({r['snapshot_digest']})"
        + (" [dry run: nothing written]" if r["dry_run"] else ""),
        f"{r['repositories']} repositories, {r['tags']} tags, {r['manifests']} manifests, "
        f"{r['blobs_total']} blobs",
        f"copied {r['blobs_copied']} new blobs ({r['bytes_copied']} bytes); "
        f"{r['blobs_present']} already in the backup",
    ]
    for c in r["corrupt"]:  # type: ignore[attr-defined]
        lines.append(f"CORRUPT at the source: {c['digest']} (bytes hash to {c['actual']})")
    for s in r["skipped"]:  # type: ignore[attr-defined]
        lines.append(f"left out: {s}")
    return lines


@click.command("backup")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--config", metavar="FILE", help="the origin's config.yml (names the root)")
@click.option("--root", metavar="DIR", help="the origin's storage root (default ./data/origin)")
@click.option("--dry-run", is_flag=True, help="count what would be copied; write nothing")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.pass_context
def command(
    ctx: click.Context,
    dest: str,
    config: str | None,
    root: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Back the origin's storage root up into DEST (incremental; safe while pushes run)."""
    from origin.backup import run_backup

    source = resolve_root(config, root)
    with rich_progress(not as_json) as progress:
        try:
            report = run_backup(source, dest, dry_run=dry_run, progress=progress)
        except OSError as exc:
            raise click.ClickException(f"backup failed: {exc}") from None
    print_report(report, as_json, _render)
    ctx.exit(0 if report.ok else 1)
