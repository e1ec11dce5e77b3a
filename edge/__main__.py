"""``quayside edge serve`` (also ``python -m edge``): run a pull-through caching edge node.

Settings come from ``--config FILE`` (YAML), ``QUAYSIDE_EDGE_*`` environment variables and
these flags (highest precedence). Once the socket is bound, one JSON line goes to stdout::

    {"event": "listening", "url": "http://127.0.0.1:PORT"}

The socket is bound *before* the application starts, so with ``--listen HOST:0`` and no
``--advertise`` the node advertises its actual URL to the region (peer streaming). SIGTERM
and SIGINT stop gracefully: the listener closes, requests in flight get 5 s, running fills
get their drain time to finish and commit, then everything is closed. With ``--redis`` the
tag cache's timestamps use wall-clock time so nodes on different machines agree.
Exit status: 0 after a clean stop, 2 for a configuration error (the message names the key),
1 when the address cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from aiohttp import web

from regcore.config import ConfigError, EdgeConfig, load_edge_config
from regcore.logging import JSONAccessLogger, setup_logging

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
    setup_logging(config.log.level, config.log.format)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.Runner()
    with runner:
        return runner.run(serve(config))


def bind(config: EdgeConfig) -> tuple[socket.socket, str]:
    """Bind the listening socket; returns it and the URL it is reachable at.

    Raises:
        OSError: the address cannot be bound.
    """
    host, port = config.bind
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    shown = (
        "127.0.0.1"
        if bound_host in ("0.0.0.0", "")
        else ("::1" if bound_host == "::" else bound_host)
    )
    if ":" in shown:
        shown = f"[{shown}]"
    return sock, f"http://{shown}:{bound_port}"


async def serve(config: EdgeConfig) -> int:
    """Serve until SIGTERM/SIGINT. Returns the exit status."""
    from edge.app import create_app

    try:
        sock, url = bind(config)
    except OSError as exc:
        print(
            f"quayside edge: cannot listen on {config.listen}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    if config.advertise is None:
        config = dataclasses.replace(config, advertise=url)
    clock = time.time if config.redis.enabled else time.monotonic
    app = create_app(config, clock=clock)
    runner = web.AppRunner(
        app,
        access_log=None if config.log.accesslog_disabled else logging.getLogger("quayside.access"),
        access_log_class=JSONAccessLogger,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        handle_signals=False,
    )
    try:
        await runner.setup()
    except Exception as exc:
        sock.close()
        log.exception("edge failed to start")
        print(f"quayside edge: cannot start: {exc}", file=sys.stderr)
        return 1
    site = web.SockSite(runner, sock)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the listening line: a launcher may
        loop.add_signal_handler(sig, stop.set)  # signal as soon as it reads it
    print(json.dumps({"event": "listening", "url": url}), flush=True)
    log.info(
        "listening",
        extra={
            "url": url,
            "advertise": config.advertise,
            "upstreams": [u.name for u in config.upstreams],
            "cache_dir": config.cache.dir,
            "cache_size": config.cache.size,
        },
    )
    try:
        await stop.wait()
    finally:
        log.info("shutting down: draining requests and fills")
        await runner.cleanup()
    return 0


def _standalone() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge", description="serve a pull-through caching edge node"
    )
    add_arguments(parser)
    return main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(_standalone())
