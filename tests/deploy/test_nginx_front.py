"""deploy/nginx/tls-front.conf: nginx accepts it (``nginx -t``) and, run for real on loopback
with certificates from ``quayside certs init``'s code, terminates TLS in front of a real edge
and streams a blob through (bytes and digest checked)."""

from __future__ import annotations

import hashlib
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness.ports import free_port, port_open
from regcore.auth.tlscerts import init_certs
from tests.deploy.deployfiles import DEPLOY

FRONT = DEPLOY / "nginx" / "tls-front.conf"


def _main_conf(work: Path, front: Path) -> str:
    return f"""user root root;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {work}/access.log;
    client_body_temp_path {work}/tmp-body;
    proxy_temp_path {work}/tmp-proxy;
    fastcgi_temp_path {work}/tmp-fastcgi;
    uwsgi_temp_path {work}/tmp-uwsgi;
    scgi_temp_path {work}/tmp-scgi;
    include {front};
}}
"""


def _localized_front(work: Path, port: int, edge_port: int) -> tuple[Path, Path]:
    certs = init_certs(work / "certs", ["edge.example.internal", "127.0.0.1"])
    text = FRONT.read_text()
    text, n_listen = re.subn(r"listen\s+443\b", f"listen 127.0.0.1:{port}", text)
    text = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {certs.cert};", text)
    text = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {certs.key};", text)
    text, n_up = re.subn(r"server 127\.0\.0\.1:5001", f"server 127.0.0.1:{edge_port}", text)
    assert n_listen == 1 and n_up == 1, "tls-front.conf changed shape: update this test"
    path = work / "tls-front.conf"
    path.write_text(text)
    return certs.ca_cert, path


@pytest.fixture
def nginx_bin() -> str:
    path = shutil.which("nginx")
    if path is None:
        pytest.fail("nginx is not installed (make sysdeps installs it)")
    return path


def test_tls_front_passes_nginx_t_and_streams_a_blob(
    nginx_bin: str, tmp_path: Path, server_group
) -> None:
    origin = server_group.origin()
    blob = bytes(range(256)) * 4096 * 3  # 3 MiB
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    req = urllib.request.Request(
        f"{origin.url}/v2/team/app/blobs/uploads/?digest={digest}", data=blob, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 201
    edge = server_group.edge({"origin": origin.url})
    edge_port = int(edge.url.rsplit(":", 1)[1])
    port = free_port()
    ca, front = _localized_front(tmp_path, port, edge_port)
    conf = tmp_path / "nginx.conf"
    conf.write_text(_main_conf(tmp_path, front))
    base = [nginx_bin, "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    assert "syntax is ok" in check.stderr and "test is successful" in check.stderr
    proc = subprocess.Popen([*base, "-g", "daemon off;"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ctx = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/v2/", context=ctx, timeout=10) as r:
            assert r.status == 200
        url = f"https://127.0.0.1:{port}/v2/team/app/blobs/{digest}?ns=origin"
        with urllib.request.urlopen(url, context=ctx, timeout=30) as r:
            body = r.read()
            assert r.headers["Docker-Content-Digest"] == digest
        assert hashlib.sha256(body).hexdigest() == digest.split(":")[1]
        # A client that does not trust our CA is refused by TLS, not served.
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"https://127.0.0.1:{port}/v2/", timeout=10)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
