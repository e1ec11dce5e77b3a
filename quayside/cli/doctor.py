"""``quayside doctor``: the checklist to run when a registry misbehaves.

``quayside doctor [--origin URL] [--edge URL] [--config FILE ...] [--ca FILE] [--json]``
checks ports, the registry API, clock skew, health and readiness, TLS (expiry, host name,
trust, the configured certificate actually served), storage (writable, free space, inodes,
cache bound), Redis, every upstream with its credentials, the token service's keys against
what registries trust, and prints client snippets for this setup. Each finding is pass, warn
or fail with a one-line fix: a table, or JSON with ``--json``. Exit status 0 when no check
failed (warnings allowed), 1 otherwise, 2 for a usage error (nothing to check).
"""

from __future__ import annotations

import rich_click as click


@click.command("doctor")
@click.option("--origin", "origin_url", metavar="URL", help="the origin registry's URL")
@click.option("--edge", "edge_url", metavar="URL", help="an edge node's URL")
@click.option(
    "--config",
    "configs",
    metavar="FILE",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="an origin or edge config file (repeatable; the kind is detected)",
)
@click.option(
    "--ca",
    "ca_file",
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False),
    help="CA bundle (PEM) clients trust, to check the TLS chain against",
)
@click.option(
    "--timeout", default=5.0, show_default=True, metavar="SECONDS", help="per network step"
)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON (for scripts)")
@click.option("--no-hints", is_flag=True, help="leave out the client configuration snippets")
def command(
    origin_url: str | None,
    edge_url: str | None,
    configs: tuple[str, ...],
    ca_file: str | None,
    timeout: float,
    as_json: bool,
    no_hints: bool,
) -> None:
    """Check a Quayside setup: each problem with its one-line fix (exit 1 if any check fails).

    URLs not given are derived from the config files (the origin's http.host or http.addr,
    the edge's listen address). Storage checks run on this host, on the directories the
    configs name.
    """
    import asyncio
    import os

    from rich.console import Console

    from quayside.doctor import diagnose, load_setup
    from quayside.doctor.render import render

    if not (origin_url or edge_url or configs):
        raise click.UsageError("nothing to check: give --origin, --edge or --config")
    setup = load_setup(
        origin_url=origin_url,
        edge_url=edge_url,
        configs=configs,
        environ=os.environ,
        ca_file=ca_file,
        timeout=timeout,
    )
    report = asyncio.run(diagnose(setup))
    if as_json:
        click.echo(report.to_json())
    else:
        render(report, Console(), hints=not no_hints)
    click.get_current_context().exit(report.exit_code)
