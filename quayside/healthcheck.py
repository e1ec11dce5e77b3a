"""Container health check for either role, with no knowledge baked into the image.

A container runs one server as its main process (``quayside origin serve ...`` or ``quayside
edge serve ...``). The health check is a second process in the same container: it reads that
process's command line from ``/proc/<pid>/cmdline`` (PID 1 by default), parses it with the server's own
command (``quayside origin|edge serve``) and loads the configuration exactly as the server did
(same ``--config`` file, same flags, same ``REGISTRY_*`` / ``QUAYSIDE_EDGE_*`` environment),
and asks that server's ``/healthz``.

Guarantees: exit status 0 only when ``/healthz`` answered 200 within the timeout; 1 for an
unhealthy or unreachable server; 2 when the main process is not a Quayside server (the message
says what was found). A wildcard bind address (``0.0.0.0``, ``::``) is probed on loopback; a TLS
listener is probed over https without certificate verification (loopback only).
"""

from __future__ import annotations

import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROLES = ("origin", "edge")


class HealthcheckError(Exception):
    """The main process is not a Quayside server, or its configuration cannot be read."""


@dataclass(frozen=True)
class Target:
    role: str
    url: str


def read_cmdline(pid: int, proc: Path = Path("/proc")) -> list[str]:
    """The argv of ``pid`` (raises HealthcheckError when it cannot be read)."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError as exc:
        raise HealthcheckError(f"cannot read the command line of pid {pid}: {exc}") from None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def target_from_argv(argv: Sequence[str], environ: Mapping[str, str]) -> Target:
    """Where the server started with ``argv`` (and ``environ``) answers ``/healthz``."""
    role = next(
        (argv[i] for i in range(len(argv) - 1) if argv[i] in ROLES and argv[i + 1] == "serve"),
        None,
    )
    if role is None:
        raise HealthcheckError(f"not a quayside server: {' '.join(argv)[:200]!r}")
    args = list(argv[argv.index(role) + 2 :])  # what follows "<role> serve"
    try:
        if role == "origin":
            from origin.__main__ import overrides_from_args as origin_overrides
            from quayside.cli.origin import serve as origin_serve
            from quayside.cli.origin import serve_namespace as origin_namespace
            from regcore.config import load_origin_config

            ns = origin_namespace(origin_serve.make_context("serve", args).params)
            origin = load_origin_config(ns.config, environ, origin_overrides(ns))
            host, port = origin.http.bind
            tls = bool(origin.http.tls.certificate)
        else:
            from edge.__main__ import overrides_from_args as edge_overrides
            from edge.config import load_edge_config
            from quayside.cli.edge import serve as edge_serve
            from quayside.cli.edge import serve_namespace as edge_namespace

            ns = edge_namespace(edge_serve.make_context("serve", args).params)
            edge = load_edge_config(ns.config, environ, edge_overrides(ns))
            host, port = edge.bind
            tls = bool(edge.tls.certificate)
    except Exception as exc:  # config errors: report, do not crash the health check
        raise HealthcheckError(f"cannot load the {role} configuration: {exc}") from None
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return Target(role, f"{'https' if tls else 'http'}://{host}:{port}/healthz")


def probe(url: str, timeout: float) -> tuple[bool, str]:
    """GET ``url``: (healthy, one-line reason)."""
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status == 200, f"{url}: {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {getattr(exc, 'reason', exc)}"


def check(
    *,
    url: str | None = None,
    pid: int = 1,
    timeout: float = 3.0,
    environ: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """Exit status and message for one health check (see the module docstring)."""
    if url is None:
        try:
            url = target_from_argv(
                read_cmdline(pid), os.environ if environ is None else environ
            ).url
        except HealthcheckError as exc:
            return 2, str(exc)
    healthy, reason = probe(url, timeout)
    return (0 if healthy else 1), reason
