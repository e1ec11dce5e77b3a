"""Loopback port helpers: pick a free port, wait for a listener or an HTTP answer.

All helpers are synchronous (they run before and after event loops, in fixtures and in the
bench driver) and bounded in time: every wait raises :class:`TimeoutError` naming what it waited
for when the deadline passes.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago (bind to port 0, read, close).

    There is an unavoidable race with other processes; on loopback in tests it is negligible.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """True when a TCP connection to ``host:port`` succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until ``host:port`` accepts TCP connections.

    Raises:
        TimeoutError: nothing accepted within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.1f}s")


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """One ``GET url``: the HTTP status of the answer (any status counts), or None when there
    is no HTTP answer (connection refused, reset, timed out)."""
    answer = _get_status(url, timeout)
    return answer if isinstance(answer, int) else None


def wait_http(url: str, timeout: float = 10.0) -> int:
    """Block until ``url`` returns any HTTP response (any status counts); return the status.

    Raises:
        TimeoutError: no HTTP answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        answer = _get_status(url, 1.0)
        if isinstance(answer, int):
            return answer
        last = answer
        time.sleep(0.05)
    raise TimeoutError(f"no HTTP answer from {url} after {timeout:.1f}s (last error: {last})")


def _get_status(url: str, timeout: float) -> int | Exception:
    """The status of one ``GET url``, or the error that prevented an HTTP answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError) as exc:
        return exc
