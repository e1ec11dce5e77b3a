"""``quayside healthcheck``: the container HEALTHCHECK for both roles (see quayside.healthcheck)."""

from __future__ import annotations

import sys

import click


@click.command(
    "healthcheck",
    help="Exit 0 when the Quayside server of this container answers /healthz with 200. "
    "By default the server is PID 1; its role, address and TLS come from its own command line, "
    "config file and environment.",
)
@click.option("--url", help="probe this URL instead of finding the server")
@click.option("--pid", type=int, default=1, show_default=True, help="process of the server")
@click.option("--timeout", type=float, default=3.0, show_default=True, help="seconds")
def command(url: str | None, pid: int, timeout: float) -> None:
    from quayside.healthcheck import check

    status, message = check(url=url, pid=pid, timeout=timeout)
    click.echo(message, err=status != 0)
    sys.exit(status)
