"""``quayside ls [REPO-GLOB]``: what an origin's root holds.

Repositories with their tags (digest, push and pull time), sizes (bytes only this repository
holds, bytes shared with others), and usage per namespace against its quota. Pull times come
from the origin's batched records; a serving origin is asked to flush them first. ``--json``
prints :meth:`origin.inventory.Inventory.to_dict` for scripts.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import click
from rich.console import Console
from rich.table import Table

from origin.inventory import Inventory
from origin.opsclient import inventory, load_config
from regcore.config import ConfigError
from regcore.sizes import format_duration, format_size


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    return f"{format_duration(max(now - ts, 0.0))} ago"


def _render(inv: Inventory, show_tags: bool) -> None:
    out = Console()
    now = time.time()
    repos = Table(title="repositories")
    for col in (
        "repository",
        "tags",
        "manifests",
        "unique",
        "shared",
        "last pushed",
        "last pulled",
    ):
        repos.add_column(
            col, justify="right" if col in ("tags", "manifests", "unique", "shared") else "left"
        )
    for r in inv.repositories:
        repos.add_row(
            r.name,
            str(len(r.tags)),
            str(len(r.manifests)),
            format_size(r.unique_bytes),
            format_size(r.shared_bytes),
            _when(r.last_pushed, now),
            _when(r.last_pulled, now),
        )
        if show_tags:
            sizes = {m.digest: m.size for m in r.manifests}
            for t in r.tags:
                repos.add_row(
                    f"  :{t.tag}",
                    t.digest[:19],
                    "",
                    format_size(sizes.get(t.digest, 0)),
                    "",
                    _when(t.pushed, now),
                    _when(t.pulled, now),
                    style="dim",
                )
    out.print(repos)
    spaces = Table(title="namespaces")
    for col in ("namespace", "stored", "quota", "used"):
        spaces.add_column(col, justify="left" if col == "namespace" else "right")
    for ns, usage in inv.namespaces.items():
        used, limit = int(usage["bytes"] or 0), usage["limit"]
        spaces.add_row(
            ns,
            format_size(used),
            format_size(int(limit)) if limit is not None else "-",
            f"{100 * used / limit:.0f}%" if limit else "-",
        )
    out.print(spaces)
    out.print(f"stored: {format_size(inv.stored_bytes)} in {len(inv.repositories)} repositories")


@click.command("ls", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("pattern", metavar="[REPO-GLOB]", required=False)
@click.option("--config", "config_file", metavar="FILE", help="The origin's config.yml.")
@click.option("--root", metavar="DIR", help="Storage root (overrides the config).")
@click.option("--json", "as_json", is_flag=True, help="Print the inventory as JSON.")
@click.option("--tags/--no-tags", default=True, help="List each repository's tags (default).")
def command(
    pattern: str | None, config_file: str | None, root: str | None, as_json: bool, tags: bool
) -> None:
    """List repositories, tags, digests, sizes (unique and shared), push and pull times.

    REPO-GLOB: * matches within a path component, ** across (team/**)."""
    try:
        config = load_config(config_file, root)
    except ConfigError as exc:
        click.echo(f"quayside ls: {exc}", err=True)
        sys.exit(2)
    console = Console(stderr=True)
    with console.status("reading the storage root", spinner="dots"):
        inv = asyncio.run(inventory(config, pattern))
    if as_json:
        click.echo(json.dumps(inv.to_dict(), indent=2))
    else:
        _render(inv, tags)


if __name__ == "__main__":
    command()
