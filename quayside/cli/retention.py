"""``quayside retention``: apply ``quayside.retention.policies`` now.

Like ``quayside gc``, the run goes to the serving origin when there is one (its admin
endpoint), else runs here under the root's lock. ``--dry-run`` lists what would be deleted and
the bytes the next ``quayside gc`` would then free; a real run also writes one audit line and
one event per deletion. Exit status: 0 done, 1 failed, 2 bad configuration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from origin.opsclient import OpsClientError, load_config, rich_progress, run_job
from regcore.config import ConfigError
from regcore.logging import setup_logging
from regcore.sizes import format_duration, format_size


def _print(report: dict[str, Any], where: str) -> None:
    out = Console()
    now = time.time()
    verb = "would delete" if report["dry_run"] else "deleted"
    table = Table(title=f"retention ({where}): {verb}")
    for col in ("repository", "kind", "tag", "digest", "pushed", "policy", "reason"):
        table.add_column(col)
    for d in report["deleted"]:
        table.add_row(
            d["repository"],
            d["kind"],
            d["tag"] or "",
            d["digest"][:19],
            f"{format_duration(max(now - d['pushed'], 0))} ago",
            d["policy"],
            d["reason"],
        )
    out.print(table)
    for k in report["kept"]:
        out.print(f"kept {k['repository']}:{k['tag']}: {k['reason']}")
    for d in report["changed"]:
        out.print(f"skipped {d['repository']} {d['tag'] or d['digest']}: changed during the run")
    out.print(
        f"{len(report['deleted'])} deletions in {report['repositories']} repositories; "
        f"bytes freed by the next gc: {format_size(report['bytes_freed'])}"
    )


@click.command("retention", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--config", "config_file", metavar="FILE", help="The origin's config.yml.")
@click.option("--root", metavar="DIR", help="Storage root (overrides the config).")
@click.option(
    "--url",
    metavar="URL",
    help="Send the run to this origin (default: the one serving the root, if any).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def command(
    dry_run: bool, config_file: str | None, root: str | None, url: str | None, as_json: bool
) -> None:
    """Delete tags and manifests the retention policies no longer keep.

    A serving origin applies the policies of its own configuration; a local run those of
    --config."""
    try:
        config = load_config(config_file, root)
    except ConfigError as exc:
        click.echo(f"quayside retention: {exc}", err=True)
        sys.exit(2)
    setup_logging("warning", config.log.format)
    logging.getLogger("quayside.audit").setLevel(logging.INFO)
    try:
        with rich_progress("retention", quiet=as_json) as on_progress:
            report, where = asyncio.run(
                run_job(config, "retention", {"dry_run": dry_run}, on_progress=on_progress, url=url)
            )
    except OpsClientError as exc:
        click.echo(f"quayside retention: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"where": where, **report}, indent=2))
    else:
        _print(report, where)


if __name__ == "__main__":
    command()
