"""``quayside origin``: the private origin registry (``serve``).

The flags are those of ``python -m origin`` (:func:`origin.__main__.add_arguments`); the
server is imported only when ``serve`` runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

import rich_click as click

from quayside.cli import LOG_LEVELS


@click.group("origin")
def command() -> None:
    """The private origin registry (OCI Distribution Spec v1.1, registry:2 disk layout)."""


@command.command("serve")
@click.option("--config", metavar="FILE", help="distribution-style config.yml")
@click.option("--listen", metavar="HOST:PORT", help="address to bind (port 0: any free port)")
@click.option("--root", metavar="DIR", help="storage root (storage.filesystem.rootdirectory)")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), help="log level (log.level)")
@click.pass_context
def serve(ctx: click.Context, **options: object) -> None:
    """Serve the private origin registry.

    Prints one JSON line {"event": "listening", "url": ...} once bound; SIGTERM or SIGINT
    stops it gracefully. Exit status: 0 after a clean stop, 2 for a configuration error
    (the key named), 1 when the address cannot be bound.
    """
    from origin.__main__ import main

    ctx.exit(main(serve_namespace(options)))


def serve_namespace(params: Mapping[str, object]) -> argparse.Namespace:
    """``serve``'s parsed options as the namespace ``origin.__main__.main`` takes."""
    return argparse.Namespace(**params)
