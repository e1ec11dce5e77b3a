"""TLS from ``quayside certs init``: skopeo trusts the CA through ``--cert-dir`` and logs in
over TLS, aiohttp with the CA too; a plain-HTTP client on the TLS port gets Go's answer
(``400 Client sent an HTTP request to an HTTPS server.``), a silent client is closed after the
first-byte timeout and garbage at once."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from harness.authclients import skopeo, skopeo_login
from harness.edgeorigin import request
from harness.images import make_image
from harness.layouts import write_layout
from harness.servers import OriginProcess
from harness.tlsprobe import GO_MESSAGE, listen_backlog, probe
from quayside.cli import certs as certs_cli
from regcore.auth.htpasswd import hash_password, write_entries
from regcore.serving import BACKLOG
from regcore.tlssniff import FIRST_BYTE_TIMEOUT

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover
    pytest.skip("skopeo is not installed", allow_module_level=True)

PASSWORD = "Tls-user-pw-88"


@pytest.fixture(scope="module")
def tls_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OriginProcess, Path]]:
    tmp_path = tmp_path_factory.mktemp("origin-tls")
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


def test_plain_http_to_the_tls_port_gets_gos_400(tls_origin: tuple[OriginProcess, Path]) -> None:
    origin, certs = tls_origin
    host, port = origin.url.split("//", 1)[1].rsplit(":", 1)
    reply = request(f"http://{host}:{port}/v2/", timeout=20)  # what `curl http://...` does
    assert reply.status == 400
    assert reply.body == GO_MESSAGE
    assert reply.headers["Content-Type"].startswith("text/plain")
    got = probe(host, int(port), b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.status_line == b"HTTP/1.0 400 Bad Request" and got.body == GO_MESSAGE
    assert got.ended == "closed" and got.seconds < 5
    # TLS clients are served as before on the same port (401: the origin wants a login)
    assert asyncio.run(_tls_status(origin.url + "/v2/", certs / "ca.crt")) == 401
    assert origin.running


def test_silent_and_garbage_clients_on_the_tls_port_are_closed(
    tls_origin: tuple[OriginProcess, Path],
) -> None:
    origin, _ = tls_origin
    host, port = origin.url.split("//", 1)[1].rsplit(":", 1)
    garbage = probe(host, int(port), b"\x00\x01\x02\x03 not tls, not http\r\n")
    assert garbage.data == b"" and garbage.ended in ("closed", "reset")
    assert garbage.seconds < 5
    silent = probe(host, int(port), b"", timeout=30)
    assert silent.data == b"" and silent.ended == "closed"
    assert FIRST_BYTE_TIMEOUT - 1 <= silent.seconds < FIRST_BYTE_TIMEOUT + 5
    assert origin.running


async def _tls_status(url: str, cafile: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(cafile))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        async with session.get(url) as resp:
            return resp.status


def test_tls_and_plain_listeners_keep_the_servers_accept_backlog(
    tls_origin: tuple[OriginProcess, Path], tmp_path: Path
) -> None:
    """Both kinds of site listen again on the bound socket: each must be given the server's
    backlog (aiohttp's own default, 128, overrode it before), capped by somaxconn."""
    want = min(BACKLOG, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    origin, _ = tls_origin
    assert listen_backlog(origin.port) == want
    plain = OriginProcess(workdir=tmp_path / "plain")
    plain.start()
    try:
        assert listen_backlog(plain.port) == want
    finally:
        plain.close()
