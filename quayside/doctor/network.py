"""Endpoint checks: the port answers, ``/v2/`` speaks the registry API, health, clock skew.

For one server URL (``role`` ``origin`` or ``edge``), in order, each step skipped when the one
before failed:

- ``port``: a TCP connection to host:port within the timeout (refused, timed out, no route:
  fail);
- ``api``: ``GET /v2/`` answers 200 or 401 with ``Docker-Distribution-API-Version`` (TLS is not
  verified here: :mod:`quayside.doctor.tls` does that);
- ``clock``: the answer's ``Date`` against this machine's clock: over :data:`SKEW_FAIL` s apart
  tokens are refused as expired or not yet valid (fail), over :data:`SKEW_WARN` s warn;
- ``health`` / ``ready``: ``/healthz`` and ``/readyz``: ``ok`` pass, ``degraded`` warn, 503
  fail with the server's own reason; a server without ``/readyz`` is skipped.

:func:`check_listen` compares a config's listen address with how others must reach the node
(loopback-only listener with a non-loopback advertised URL: warn).
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from quayside.doctor.results import Result
from regcore import USER_AGENT
from regcore.configvalues import split_hostport

__all__ = [
    "SKEW_FAIL",
    "SKEW_WARN",
    "check_endpoint",
    "check_listen",
    "explain",
    "host_port",
    "insecure_ssl",
]

SKEW_WARN = 10.0
SKEW_FAIL = 60.0  # regcore.auth.tokens.LEEWAY: beyond it tokens are refused


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


def insecure_ssl() -> ssl.SSLContext:
    """A client context that accepts any certificate (for checks that are not about TLS)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def check_endpoint(
    role: str, url: str, *, timeout: float, clock: Any = time.time
) -> list[Result]:
    """The ``port``, ``api``, ``clock``, ``health`` and ``ready`` results of ``url``."""
    host, port = host_port(url)
    out: list[Result] = []
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.close()
        await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        return [
            Result.fail(
                role,
                "port",
                f"nothing answers at {host}:{port}: {explain(exc)}",
                f"start the {role}, or check its listen address, the port and firewalls",
            )
        ]
    out.append(Result.ok(role, "port", f"{host}:{port} accepts connections"))
    ssl_ctx = insecure_ssl() if url.startswith("https://") else False
    connector = aiohttp.TCPConnector(ssl=ssl_ctx)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(
        connector=connector, timeout=client_timeout, headers={"User-Agent": USER_AGENT}
    ) as session:
        try:
            async with session.get(url + "/v2/", allow_redirects=False) as resp:
                status, headers = resp.status, resp.headers
                await resp.read()
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            out.append(
                Result.fail(
                    role,
                    "api",
                    f"GET /v2/ failed: {explain(exc)}",
                    "check the URL's scheme (http vs https) and that this is the registry port",
                )
            )
            return out
        version = headers.get("Docker-Distribution-API-Version")
        if status in (200, 401) and version == "registry/2.0":
            out.append(Result.ok(role, "api", f"GET /v2/ answers {status} (registry/2.0)"))
        else:
            out.append(
                Result.fail(
                    role,
                    "api",
                    f"GET /v2/ answered {status} without the registry API header",
                    "point the doctor (and clients) at the registry itself, not a proxy page",
                )
            )
        out.append(_clock(role, headers.get("Date"), clock()))
        out.append(await _health(session, role, url, "/healthz", "health"))
        out.append(await _health(session, role, url, "/readyz", "ready"))
    return out


def _clock(role: str, date: str | None, now: float) -> Result:
    if not date:
        return Result.skip(role, "clock", "no Date header to compare")
    try:
        served = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return Result.warn(role, "clock", f"unparsable Date header {date!r}", "")
    skew = served - now
    detail = f"server clock {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} this host"
    if abs(skew) > SKEW_FAIL:
        return Result.fail(
            role,
            "clock",
            detail,
            "sync clocks (NTP/chrony): tokens are refused beyond 60 s of skew",
            skew_seconds=round(skew, 1),
        )
    if abs(skew) > SKEW_WARN:
        return Result.warn(
            role, "clock", detail, "sync clocks with NTP/chrony", skew_seconds=round(skew, 1)
        )
    return Result.ok(
        role, "clock", f"within {SKEW_WARN:.0f} s of this host", skew_seconds=round(skew, 1)
    )


async def _health(
    session: aiohttp.ClientSession, role: str, url: str, path: str, name: str
) -> Result:
    try:
        async with session.get(url + path, allow_redirects=False) as resp:
            status = resp.status
            body: Any = await resp.json(content_type=None) if status in (200, 503) else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Result.fail(
            role, name, f"GET {path} failed: {explain(exc)}", f"see the {role}'s log"
        )
    if status == 404:
        return Result.skip(role, name, f"{path} not served by this {role}")
    state = body.get("status") if isinstance(body, dict) else None
    reason = body.get("reason", "") if isinstance(body, dict) else ""
    data = {"body": body} if isinstance(body, dict) else {}
    if status == 200 and state in ("ok", None):
        return Result.ok(role, name, f"{path}: ok", **data)
    if status == 200:
        return Result.warn(
            role, name, f"{path}: {state}: {reason}", _health_fix(reason, role), **data
        )
    return Result.fail(
        role,
        name,
        f"{path} answered {status}: {reason or state}",
        _health_fix(reason, role),
        **data,
    )


def _health_fix(reason: str, role: str) -> str:
    if "redis" in reason:
        return "start Redis or fix redis.url (the edge falls back to node-local fills)"
    if "storage" in reason:
        return f"free space or fix permissions on the {role}'s storage (see the storage checks)"
    if "upstream" in reason:
        return "check the upstream URLs and network (see the upstream checks)"
    if "starting" in reason:
        return f"wait for the {role} to finish starting, or see its log"
    return f"see the {role}'s log"


def check_listen(role: str, listen: str, reached_at: str | None) -> Result:
    """Warn when ``listen`` is loopback-only while the node must be reached at a
    non-loopback ``reached_at`` URL (advertise / http.host)."""
    try:
        host, port = split_hostport(listen)
    except ValueError as exc:
        return Result.fail(role, "listen", str(exc), "fix the listen address")
    if not reached_at:
        return Result.ok(role, "listen", f"listens on {listen}")
    target = urlsplit(reached_at).hostname or ""
    if _loopback(host) and not _loopback(target):
        return Result.warn(
            role,
            "listen",
            f"listens on {listen} (loopback only) but is reached as {target}",
            f"listen on 0.0.0.0:{port} (or the interface {target} resolves to)",
        )
    return Result.ok(role, "listen", f"listens on {listen}")


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def explain(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc.os_error).__name__}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"name does not resolve ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__
