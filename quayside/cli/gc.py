"""``quayside gc``: online garbage collection of an origin's storage root.

If an origin serves the root, the collection runs inside it (through its admin endpoint, under
the lock its pushes take), so pushes may go on; otherwise it runs here, holding the root's lock
so no origin starts meanwhile (see :mod:`origin.rootlock`). Exit status: 0 done, 1 the run
failed or the origin could not be reached, 2 bad configuration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from origin.opsclient import OpsClientError, load_config, rich_progress, run_job
from regcore.config import ConfigError
from regcore.logging import setup_logging
from regcore.opsconfig import parse_age
from regcore.sizes import format_size


def _age(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_age(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _print(report: dict[str, Any], where: str, verbose: bool) -> None:
    out = Console()
    verb = "would delete" if report["dry_run"] else "deleted"
    table = Table(title=f"garbage collection ({where})", show_header=False)
    table.add_row("repositories", str(report["repositories"]))
    table.add_row("manifests marked", str(report["manifests_marked"]))
    table.add_row("blobs marked / total", f"{report['blobs_marked']} / {report['blobs_total']}")
    table.add_row(
        f"blobs {verb}", f"{len(report['blobs_deleted'])} ({format_size(report['bytes_deleted'])})"
    )
    table.add_row(f"links {verb}", str(len(report["links_pruned"])))
    table.add_row(f"untagged manifests {verb}", str(len(report["manifests_deleted"])))
    table.add_row("kept: within grace", str(report["blobs_young"]))
    table.add_row("kept: used during the run", str(report["spared"]))
    table.add_row("seconds", f"{report['finished'] - report['started']:.2f}")
    out.print(table)
    if verbose:
        for repo, digest in report["manifests_deleted"]:
            out.print(f"manifest {repo}@{digest}")
        for repo, digest in report["links_pruned"]:
            out.print(f"link     {repo} {digest}")
        for digest, size in report["blobs_deleted"]:
            out.print(f"blob     {digest} {format_size(size)}")


@click.command("gc", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dry-run", is_flag=True, help="Report what would be deleted; delete nothing.")
@click.option(
    "--grace",
    callback=_age,
    metavar="AGE",
    help="Never delete what was written within AGE (1h, 30m, 2d; default quayside.gc.grace).",
)
@click.option(
    "--delete-untagged",
    is_flag=True,
    default=None,
    help="Also delete manifests no tag, index or subject reaches.",
)
@click.option("--config", "config_file", metavar="FILE", help="The origin's config.yml.")
@click.option("--root", metavar="DIR", help="Storage root (overrides the config).")
@click.option(
    "--url",
    metavar="URL",
    help="Send the run to this origin (default: the one serving the root, if any).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="List every deleted digest.")
def command(
    dry_run: bool,
    grace: float | None,
    delete_untagged: bool | None,
    config_file: str | None,
    root: str | None,
    url: str | None,
    as_json: bool,
    verbose: bool,
) -> None:
    """Delete blobs, blob links and (optionally) untagged manifests nothing references.

    Marks from every tag, manifest revision, index child, referrer and upload in progress;
    safe while pushes run (see origin/gc.py)."""
    try:
        config = load_config(config_file, root)
    except ConfigError as exc:
        click.echo(f"quayside gc: {exc}", err=True)
        sys.exit(2)
    setup_logging("warning", config.log.format)
    logging.getLogger("quayside.audit").setLevel(logging.INFO)
    params = {
        "dry_run": dry_run,
        "grace": config.ops.gc.grace if grace is None else grace,
        "delete_untagged": (
            config.ops.gc.delete_untagged if delete_untagged is None else delete_untagged
        ),
    }
    try:
        with rich_progress("gc", quiet=as_json) as on_progress:
            report, where = asyncio.run(
                run_job(config, "gc", params, on_progress=on_progress, url=url)
            )
    except OpsClientError as exc:
        click.echo(f"quayside gc: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"where": where, **report}, indent=2))
    else:
        _print(report, where, verbose)


if __name__ == "__main__":
    command()
