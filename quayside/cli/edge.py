"""``quayside edge``: a pull-through caching edge node (``serve``).

The flags are those of ``python -m edge`` (:func:`edge.__main__.add_arguments`); the server
is imported only when ``serve`` runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

import rich_click as click

from quayside.cli import LOG_LEVELS


@click.group("edge")
def command() -> None:
    """Pull-through caching edge nodes (one fill per blob per region)."""


@command.command("serve")
@click.option("--config", metavar="FILE", help="edge config file (YAML)")
@click.option("--listen", metavar="HOST:PORT", help="address to bind (port 0: any free port)")
@click.option("--cache-dir", metavar="DIR", help="blob cache directory (cache.dir)")
@click.option("--cache-size", metavar="SIZE", help="cache bound, e.g. 10GiB (cache.size)")
@click.option(
    "--upstream",
    metavar="URL|NAME=URL",
    multiple=True,
    help="upstream registry (repeatable; the first is the default); replaces 'upstreams'",
)
@click.option("--redis", metavar="URL", help="Redis shared by the region (redis.url)")
@click.option("--advertise", metavar="URL", help="URL other nodes reach this one at")
@click.option("--tag-ttl", metavar="SECONDS", help="tag cache TTL (tags.ttl)")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), help="log level (log.level)")
@click.pass_context
def serve(ctx: click.Context, **options: object) -> None:
    """Serve a pull-through caching edge node.

    Settings: --config FILE < QUAYSIDE_EDGE_* environment < these flags. Prints one JSON line
    {"event": "listening", "url": ...} once bound; SIGTERM or SIGINT drains running fills and
    stops. Exit status: 0 after a clean stop, 2 for a configuration error (the key named), 1
    when the address cannot be bound.
    """
    from edge.__main__ import main

    ctx.exit(main(serve_namespace(options)))


def serve_namespace(params: Mapping[str, object]) -> argparse.Namespace:
    """``serve``'s parsed options as the namespace ``edge.__main__.main`` takes (argparse's
    ``append``: ``None`` when no ``--upstream`` was given)."""
    upstream = params.get("upstream")
    return argparse.Namespace(**{**params, "upstream": list(upstream or ()) or None})
