"""``quayside scrub``: re-hash every blob of the origin's root; quarantine corrupt ones.

A corrupt blob moves to ``<root>/quayside/quarantine/`` (never deleted) and the origin, even a
running one, answers 404 for it from then on (see :mod:`origin.scrub`). Exit status: 0 when
every blob is intact, 1 when corrupt blobs were found (quarantined unless ``--dry-run``).
"""

from __future__ import annotations

import rich_click as click

from quayside.cli.storageopts import print_report, resolve_root, rich_progress


def _render(r: dict[str, object]) -> list[str]:
    corrupt = r["corrupt"]
    lines = [
        f"scrubbed {r['blobs']} blobs ({r['bytes']} bytes) under {r['root']}"
        + (" [dry run: nothing moved]" if r["dry_run"] else ""),
    ]
    for c in corrupt:  # type: ignore[attr-defined]
        where = c.get("quarantined_to") or "left in place (dry run)"
        lines.append(
            f"CORRUPT {c['digest']}: {c['why']}; linked by {', '.join(c['repositories']) or '-'}"
            f"; manifest of {', '.join(c['manifest_of']) or '-'}; {where}"
        )
    if not corrupt:
        lines.append("every blob matches its digest")
    return lines


@click.command("scrub")
@click.option("--config", metavar="FILE", help="the origin's config.yml (names the root)")
@click.option("--root", metavar="DIR", help="the origin's storage root (default ./data/origin)")
@click.option("--dry-run", is_flag=True, help="hash and report; move nothing")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.pass_context
def command(
    ctx: click.Context, config: str | None, root: str | None, dry_run: bool, as_json: bool
) -> None:
    """Re-hash every blob; move corrupt ones to the quarantine (the origin then answers 404)."""
    from origin.scrub import run_scrub

    target = resolve_root(config, root)
    with rich_progress(not as_json) as progress:
        try:
            report = run_scrub(target, dry_run=dry_run, progress=progress)
        except OSError as exc:
            raise click.ClickException(f"scrub failed: {exc}") from None
    print_report(report, as_json, _render)
    ctx.exit(0 if report.ok else 1)
