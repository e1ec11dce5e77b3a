"""``quayside run`` (``make run``): an origin and an edge in front of it, on embedded defaults.

The work is :func:`quayside.run.run`; this module only declares the flags.
"""

from __future__ import annotations

from pathlib import Path

import rich_click as click

from quayside.cli import LOG_LEVELS


@click.command("run")
@click.option(
    "--data",
    default="./data",
    show_default=True,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="data directory: origin/ (registry:2 layout), edge/ (cache), logs",
)
@click.option("--origin-listen", default="127.0.0.1:5000", show_default=True, metavar="HOST:PORT")
@click.option("--edge-listen", default="127.0.0.1:5001", show_default=True, metavar="HOST:PORT")
@click.option(
    "--cache-size", default="10GiB", show_default=True, metavar="SIZE", help="edge cache bound"
)
@click.option("--log-level", default="info", show_default=True, type=click.Choice(LOG_LEVELS))
@click.pass_context
def command(
    ctx: click.Context,
    data: Path,
    origin_listen: str,
    edge_listen: str,
    cache_size: str,
    log_level: str,
) -> None:
    """Start an origin and an edge in front of it (no Redis, no configuration file).

    Prints where to push and pull; Ctrl-C or SIGTERM stops both.
    """
    from quayside.run import RunSettings, run

    ctx.exit(run(RunSettings(data, origin_listen, edge_listen, cache_size, log_level)))
