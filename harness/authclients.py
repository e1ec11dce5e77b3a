"""Clients that log in the way people do: passwords on stdin, credentials in an auth file.

``skopeo_login``/``podman_login`` run ``login --password-stdin`` (never a password in argv,
where ``ps`` would show it) and write the credentials into ``authfile``; later ``skopeo copy
--authfile`` / ``podman --authfile`` calls use it. :class:`SourceHTTP` makes one HTTP request
from a chosen loopback source address (``127.0.0.2``), the way a second client machine would.

Every call is bounded by a timeout; failures raise :class:`harness.procs.CommandError`
subclasses with the tool's stderr.
"""

from __future__ import annotations

import base64
import http.client
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.podman import Podman, PodmanError
from harness.skopeo import SKOPEO_BIN, SkopeoError

__all__ = ["basic_header", "podman_login", "skopeo", "skopeo_login", "source_request"]


def basic_header(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def _run(cmd: Sequence[str], stdin: bytes | None, timeout: float, env: Mapping[str, str]) -> bytes:
    try:
        proc = subprocess.run(
            list(cmd), input=stdin, capture_output=True, timeout=timeout, env=dict(env), check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SkopeoError(list(cmd), None, (exc.stderr or b"").decode("utf-8", "replace")) from exc
    if proc.returncode != 0:
        raise SkopeoError(list(cmd), proc.returncode, proc.stderr.decode("utf-8", "replace"))
    return proc.stdout


def skopeo_login(
    host: str,
    user: str,
    password: str,
    authfile: str | Path,
    *,
    timeout: float = 60.0,
    cert_dir: str | Path | None = None,
) -> None:
    """``skopeo login HOST`` with the password on stdin (over TLS verified against the CA in
    ``cert_dir`` when given, else plain HTTP). Raises SkopeoError."""
    tls = ["--cert-dir", str(cert_dir)] if cert_dir else ["--tls-verify=false"]
    _run(
        [
            SKOPEO_BIN,
            "login",
            *tls,
            "--authfile",
            str(authfile),
            "--username",
            user,
            "--password-stdin",
            host,
        ],
        password.encode(),
        timeout,
        os.environ,
    )


def skopeo(
    args: Sequence[str],
    authfile: str | Path,
    *,
    timeout: float = 120.0,
    cert_dir: str | Path | None = None,
) -> bytes:
    """``skopeo --insecure-policy ARGS --authfile FILE`` over plain HTTP (both directions), or
    TLS verified against the CA in ``cert_dir``. ``args`` start with the subcommand (``copy``,
    ``inspect``). Raises SkopeoError."""
    sub, *rest = args
    flags = ["--authfile", str(authfile)]
    if cert_dir is not None:
        d = str(cert_dir)
        flags += ["--src-cert-dir", d, "--dest-cert-dir", d] if sub == "copy" else ["--cert-dir", d]
    elif sub == "copy":
        flags += ["--src-tls-verify=false", "--dest-tls-verify=false"]
    else:
        flags += ["--tls-verify=false"]
    return _run([SKOPEO_BIN, "--insecure-policy", sub, *flags, *rest], None, timeout, os.environ)


def podman_login(podman: Podman, host: str, user: str, password: str, authfile: str | Path) -> None:
    """``podman login HOST`` with the password on stdin. Raises PodmanError."""
    cmd = [
        "podman",
        "login",
        "--tls-verify=false",
        "--authfile",
        str(authfile),
        "--username",
        user,
        "--password-stdin",
        host,
    ]
    try:
        proc = subprocess.run(
            cmd,
            input=password.encode(),
            capture_output=True,
            timeout=podman.timeout,
            env=podman.env(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PodmanError(cmd, None, "timeout") from exc
    if proc.returncode != 0:
        raise PodmanError(cmd, proc.returncode, proc.stderr.decode("utf-8", "replace"))


def source_request(
    url_host: str,
    port: int,
    path: str,
    *,
    source: str = "127.0.0.2",
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    timeout: float = 20.0,
) -> tuple[int, dict[str, str], bytes]:
    """One plain-HTTP request to ``url_host:port`` sent from ``source`` (a loopback address):
    ``(status, headers, body)``."""
    conn = http.client.HTTPConnection(url_host, port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request(method, path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()
