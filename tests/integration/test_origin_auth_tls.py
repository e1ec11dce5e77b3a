"""TLS from ``quayside certs init``: skopeo trusts the CA through ``--cert-dir`` and logs in
over TLS; a plain-HTTP client on the TLS port gets a prompt refusal, not a hang."""

from __future__ import annotations

import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.authclients import skopeo, skopeo_login
from harness.images import make_image, write_layout
from harness.servers import OriginProcess
from quayside.cli import certs as certs_cli
from regcore.auth.htpasswd import hash_password, write_entries

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover
    pytest.skip("skopeo is not installed", allow_module_level=True)

PASSWORD = "Tls-user-pw-88"


@pytest.fixture
def tls_origin(tmp_path: Path) -> Iterator[tuple[OriginProcess, Path]]:
    certs = tmp_path / "certs"
    result = CliRunner().invoke(
        certs_cli.command, ["init", "--hosts", "127.0.0.1,localhost", "--out", str(certs)]
    )
    assert result.exit_code == 0, result.output
    htpasswd = tmp_path / "htpasswd"
    write_entries(htpasswd, {"dev": hash_password(PASSWORD, cost=4)})
    config = {
        "http": {
            "tls": {"certificate": str(certs / "server.crt"), "key": str(certs / "server.key")}
        },
        "auth": {"htpasswd": {"realm": "tls", "path": str(htpasswd)}},
        "quayside": {"auth": {"access": [{"repository": "*", "users": {"dev": "developer"}}]}},
    }
    origin = OriginProcess(workdir=tmp_path / "origin", config=config)
    origin.start()
    try:
        yield origin, certs
    finally:
        origin.close()


def test_skopeo_over_tls_with_cert_dir(
    tls_origin: tuple[OriginProcess, Path], tmp_path: Path
) -> None:
    origin, certs = tls_origin
    assert origin.url.startswith("https://")
    host = origin.url.split("//", 1)[1]
    authfile = tmp_path / "auth.json"
    skopeo_login(host, "dev", PASSWORD, authfile, cert_dir=certs / "client")
    image = make_image(layer_sizes=(16 * 1024,), seed=5)
    write_layout(tmp_path / "layout", {"v1": image})
    skopeo(
        ["copy", f"oci:{tmp_path / 'layout'}:v1", f"docker://{host}/team/app:v1"],
        authfile,
        cert_dir=certs / "client",
    )
    raw = skopeo(
        ["inspect", "--raw", f"docker://{host}/team/app:v1"], authfile, cert_dir=certs / "client"
    )
    assert raw == image.manifest


def test_plain_http_to_tls_port_fails_fast(tls_origin: tuple[OriginProcess, Path]) -> None:
    origin, _ = tls_origin
    host, port = origin.url.split("//", 1)[1].rsplit(":", 1)
    started = time.monotonic()
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://{host}:{port}/v2/", timeout=20)
    assert time.monotonic() - started < 5, "plain HTTP to the TLS port hung"
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        assert time.monotonic() - started < 5
        assert not data.startswith(b"HTTP/1.1 200")
    assert origin.running  # the server shrugged it off
