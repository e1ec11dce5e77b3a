"""``quayside edge serve`` (also ``python -m edge``): run a pull-through caching edge node.

Settings come from ``--config FILE`` (YAML), ``QUAYSIDE_EDGE_*`` environment variables and
these flags (highest precedence). Once the socket is bound, one JSON line goes to stdout::

    {"event": "listening", "url": "http://127.0.0.1:PORT"}

(``https://`` when ``tls.certificate``/``tls.key`` are configured: the listener then serves
HTTPS only; see :mod:`edge.authtls`.)

The socket is bound *before* the application starts, so with ``--listen HOST:0`` and no
``--advertise`` the node advertises its actual URL to the region (peer streaming). SIGTERM
and SIGINT stop gracefully: the listener closes, requests in flight get 5 s, running fills
get their drain time to finish and commit, then everything is closed. With ``--redis`` the
tag cache's timestamps use wall-clock time so nodes on different machines agree.
With ``metrics.listen`` a second (plain HTTP) listener serves the metrics at ``metrics.path``
(the line then also has ``"debug_url"``) and ``listen`` serves no ``/metrics``.
Exit status: 0 after a clean stop, 2 for a configuration error (the message names the key),
1 when the address cannot be bound.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from typing import Any

from edge.authtls import server_context
from edge.config import EdgeConfig, load_edge_config
from regcore import serving
from regcore.configschema import ConfigError
from regcore.logging import setup_logging
from regcore.metrics import METRICS_REGISTRY, metrics_app

log = logging.getLogger("quayside.edge")
SHUTDOWN_TIMEOUT = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="edge config file (YAML)")
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="address to bind (port 0: any free port)"
    )
    parser.add_argument("--cache-dir", metavar="DIR", help="blob cache directory (cache.dir)")
    parser.add_argument("--cache-size", metavar="SIZE", help="cache bound, e.g. 10GiB (cache.size)")
    parser.add_argument(
        "--upstream",
        metavar="URL|NAME=URL",
        action="append",
        help="upstream registry (repeatable; the first is the default); replaces 'upstreams'",
    )
    parser.add_argument("--redis", metavar="URL", help="Redis shared by the region (redis.url)")
    parser.add_argument("--advertise", metavar="URL", help="URL other nodes reach this one at")
    parser.add_argument("--tag-ttl", metavar="SECONDS", help="tag cache TTL (tags.ttl)")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="log level (log.level)"
    )


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as ``load_edge_config`` overrides (``None``: not given)."""
    return {
        "listen": getattr(args, "listen", None),
        "cache.dir": getattr(args, "cache_dir", None),
        "cache.size": getattr(args, "cache_size", None),
        "upstreams": getattr(args, "upstream", None) or None,
        "redis.url": getattr(args, "redis", None),
        "advertise": getattr(args, "advertise", None),
        "tags.ttl": getattr(args, "tag_ttl", None),
        "log.level": getattr(args, "log_level", None),
    }


def main(args: argparse.Namespace) -> int:
    try:
        config = load_edge_config(
            getattr(args, "config", None), os.environ, overrides_from_args(args)
        )
    except ConfigError as exc:
        print(f"quayside edge: {exc}", file=sys.stderr)
        return 2
    setup_logging(
        config.log.level,
        config.log.format,
        fields=config.log.fields,
        caller=config.log.reportcaller,
    )
    return serving.run(serve(config))


async def serve(config: EdgeConfig) -> int:
    """Serve until SIGTERM/SIGINT. Returns the exit status."""
    from edge.app import create_app

    listeners = serving.bind_listeners(
        "edge",
        serving.Listen(config.listen, *config.bind),
        ssl_context=lambda: server_context(config.tls),
        second=(
            serving.Listen(f"metrics.listen {config.metrics_listen}", *config.metrics_bind)
            if config.metrics_enabled and config.metrics_listen is not None
            else None
        ),
    )
    if listeners is None:
        return 1
    if config.advertise is None:
        config = dataclasses.replace(config, advertise=listeners.url)
    clock = time.time if config.redis.enabled else time.monotonic
    app = create_app(config, clock=clock)
    site = listeners.debug_site(lambda: metrics_app(app[METRICS_REGISTRY], config.metrics_path))
    return await serving.serve_app(
        app,
        listeners.sock,
        listeners.url,
        name="edge",
        ssl_context=listeners.ssl_context,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        access_log=not config.log.accesslog_disabled,
        log_extra={
            "advertise": config.advertise,
            "upstreams": [u.name for u in config.upstreams],
            "cache_dir": config.cache.dir,
            "cache_size": config.cache.size,
        },
        debug=site,
    )


def _standalone() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge", description="serve a pull-through caching edge node"
    )
    add_arguments(parser)
    return main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(_standalone())
