"""``quayside origin serve`` (also ``python -m origin``): run the origin registry.

Once the socket is bound, one JSON line goes to stdout (and the log)::

    {"event": "listening", "url": "http://127.0.0.1:PORT"}

so a launcher that passed ``--listen 127.0.0.1:0`` learns the port. SIGTERM and SIGINT stop the
server gracefully: the listener closes, requests in flight get ``http.draintimeout`` (default
5 s) to finish, background tasks are cancelled and awaited. With ``http.debug.addr`` and
``http.debug.prometheus.enabled`` a second listener serves the metrics (the line then also
has ``"debug_url"``) and ``http.addr`` serves no ``/metrics``. Exit status: 0 after a clean stop,
2 for a configuration error (the message names the key), 1 when the address cannot be bound.
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from typing import Any

from origin import state
from origin.access import warn_if_open
from origin.app import create_app
from regcore import serving
from regcore.config import ConfigError, load_origin_config
from regcore.logging import setup_logging
from regcore.metrics import METRICS_REGISTRY, metrics_app

log = logging.getLogger("quayside.origin")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="distribution-style config.yml")
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="address to bind (port 0: any free port)"
    )
    parser.add_argument(
        "--root", metavar="DIR", help="storage root (storage.filesystem.rootdirectory)"
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="log level (log.level)"
    )


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as ``load_origin_config`` overrides (``None``: not given)."""
    return {
        "http.addr": getattr(args, "listen", None),
        "storage.filesystem.rootdirectory": getattr(args, "root", None),
        "log.level": getattr(args, "log_level", None),
    }


def main(args: argparse.Namespace) -> int:
    overrides = overrides_from_args(args)
    try:
        config = load_origin_config(getattr(args, "config", None), os.environ, overrides)
    except ConfigError as exc:
        print(f"quayside origin: {exc}", file=sys.stderr)
        return 2
    setup_logging(
        config.log.level,
        config.log.format,
        fields=config.log.fields,
        caller=config.log.reportcaller,
    )
    return serving.run(serve(config))


def _ssl_context(config: Any) -> ssl.SSLContext | None:
    tls = config.http.tls
    if not tls.certificate:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.certificate, tls.key)
    if tls.minimumtls == "tls1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.clientcas:
        for ca in tls.clientcas:
            ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def serve(config: Any) -> int:
    """Serve until SIGTERM/SIGINT. Returns the exit status."""
    host, port = config.http.bind
    warn_if_open(config.auth, host)
    debug = config.http.debug
    listeners = serving.bind_listeners(
        "origin",
        serving.Listen(config.http.addr, host, port),
        ssl_context=lambda: _ssl_context(config),
        second=(
            serving.Listen(f"http.debug.addr {debug.addr}", *debug.bind)
            if debug.serves_metrics
            else None
        ),
    )
    if listeners is None:
        return 1
    app = create_app(config)
    # quayside/origin.json: where `quayside gc` sends its runs
    app[state.OPS].announce(listeners.url)
    # metrics on the debug listener, not on http.addr (origin.app)
    site = listeners.debug_site(lambda: metrics_app(app[METRICS_REGISTRY], debug.prometheus_path))
    return await serving.serve_app(
        app,
        listeners.sock,
        listeners.url,
        name="origin",
        ssl_context=listeners.ssl_context,
        shutdown_timeout=config.http.draintimeout or 5.0,
        access_log=not config.log.accesslog_disabled,
        log_extra={"root": config.storage.rootdirectory},
        debug=site,
    )


def _standalone() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m origin", description="serve the private origin registry"
    )
    add_arguments(parser)
    return main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(_standalone())
