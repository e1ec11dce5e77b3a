"""``quayside audit``: read the origin's audit trail (current file and rotated backups).

Filters: ``--repo GLOB``, ``--actor NAME`` (``alice``, ``user:alice``, ``robot:ci``,
``anonymous``), ``--action A`` (login, token, pull, push, tag, delete, denied, robot.create,
robot.revoke; repeatable), ``--since 2h`` (or ``30m``, ``7d``), ``--limit N`` (the newest N).
Output: a rich table, or the matching JSON lines unchanged with ``--json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

import rich_click as click


def _epoch(stamp: str) -> float:
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return 0.0


def select(
    events: Iterable[dict[str, Any]],
    *,
    repo: str | None = None,
    actor: str | None = None,
    actions: tuple[str, ...] = (),
    since: float | None = None,
) -> Iterator[dict[str, Any]]:
    """The events matching every given filter (``since``: epoch seconds)."""
    for e in events:
        if repo is not None and not fnmatchcase(str(e.get("repository") or ""), repo):
            continue
        if actor is not None:
            who = str(e.get("actor") or "")
            if who != actor and who.partition(":")[2] != actor:
                continue
        if actions and e.get("action") not in actions:
            continue
        if since is not None and _epoch(str(e.get("time"))) < since:
            continue
        yield e


@click.command("audit")
@click.option("--repo", metavar="GLOB", help="repository glob, e.g. 'team/*'")
@click.option("--actor", metavar="NAME", help="alice, user:alice, robot:ci or anonymous")
@click.option("--action", "actions", multiple=True, metavar="A", help="event kind (repeatable)")
@click.option("--since", metavar="AGE", help="only events newer than this: 2h, 30m, 7d")
@click.option("--limit", type=click.IntRange(1), help="only the newest N matching events")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table")
@click.option("--config", metavar="FILE", help="the origin's config.yml")
@click.option("--root", metavar="DIR", help="the origin's storage root (default ./data/origin)")
@click.option("--file", "path", metavar="FILE", help="the audit file (default: from config)")
def command(
    repo: str | None,
    actor: str | None,
    actions: tuple[str, ...],
    since: str | None,
    limit: int | None,
    as_json: bool,
    config: str | None,
    root: str | None,
    path: str | None,
) -> None:
    """Show the audit trail: logins, tokens, pulls, pushes, tag moves, deletes, denials."""
    from origin.audit import read_events
    from regcore.auth.paths import auth_paths, parse_age

    cutoff = None
    if since:
        try:
            cutoff = time.time() - parse_age(since)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    file = path or str(auth_paths(config, root).audit)
    events = list(select(read_events(file), repo=repo, actor=actor, actions=actions, since=cutoff))
    if limit is not None:
        events = events[-limit:]
    if as_json:
        for e in events:
            click.echo(json.dumps(e, separators=(",", ":")))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "time", "actor", "client", "action", "repository", "reference", "digest", "result"
    )
    for e in events:
        digest = str(e.get("digest") or "")
        moved = f"{e.get('from') or '-'} → {e.get('to')}" if "to" in e else digest[:19]
        table.add_row(
            str(e.get("time", ""))[:19],
            str(e.get("actor") or ""),
            str(e.get("client") or ""),
            str(e.get("action") or ""),
            str(e.get("repository") or ""),
            str(e.get("reference") or ""),
            moved,
            str(e.get("result") or ""),
        )
    Console().print(table)
    if not events:
        click.echo(f"no matching events in {file}", err=True)
