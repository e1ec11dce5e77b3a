"""The edge's own users (``auth.htpasswd``) and the edge over TLS, with real processes.

Upstream: an open Quayside origin (a public registry as far as the edge is concerned) holding
one image. Shown:

- edge users: no or wrong credentials → 401 with the edge's Basic challenge (``/v2/`` too), the
  right ones pass (skopeo ``--src-creds`` pulls identical bytes); repeated failures from one
  address → 429 with ``Retry-After`` while the same user from another address still signs in;
- TLS: skopeo pulls through the edge over HTTPS, verifying it with ``--src-cert-dir`` (the CA
  of ``quayside certs init``); plain HTTP to the TLS port gets Go's ``400 Client sent an
  HTTP request to an HTTPS server.``, a silent client is closed after the first-byte timeout,
  garbage at once;
- mTLS on the peer endpoint (``tls.clientcas``): no client certificate → 403, a certificate of
  a foreign CA → handshake refused, the region's client certificate + peer token → served;
  the peer client context built from ``tls.peer`` reads a blob from the node;
- no password of the edge's users appears in its log.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from edge.accessconfig import EdgeTLSConfig
from edge.authtls import peer_client_context
from edge.peers import PeerSource
from harness import skopeo
from harness.authclients import source_request
from harness.authstack import start_configured_edge
from harness.clientcerts import foreign_ca, issue_client_cert
from harness.edgeorigin import request
from harness.images import KiB, make_image
from harness.redis import RedisServer
from harness.servers import EdgeProcess, OriginProcess
from harness.tlsprobe import GO_MESSAGE, probe
from regcore.auth.htpasswd import hash_password, write_entries
from regcore.auth.tlscerts import init_certs
from regcore.client import RegistryClient
from regcore.digest import Digest
from regcore.tlssniff import FIRST_BYTE_TIMEOUT

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None or shutil.which("redis-server") is None:  # pragma: no cover
    pytest.skip("skopeo or redis-server is not installed", allow_module_level=True)

PASSWORDS = {"puller": "Pull-edge-pw-4417", "ops": "Ops-edge-pw-9921"}
REPO = "team/app"
PEER_TOKEN = "region-peer-token-5c1d"
ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.image = make_image(layer_sizes=(48 * KiB,), seed=77)
        self.origin = OriginProcess(workdir=tmp / "origin")
        self.redis = RedisServer(workdir=tmp / "redis")
        self.certs = init_certs(tmp / "certs", ["127.0.0.1", "localhost"])
        self.cert_dir = tmp / "client-trust"  # what skopeo reads: only the CA
        self.cert_dir.mkdir()
        shutil.copy(self.certs.ca_cert, self.cert_dir / "ca.crt")
        self.peer_cert = issue_client_cert(
            self.certs.ca_cert, self.certs.ca_key, tmp / "peer", "edge-node"
        )
        self.users_edge: EdgeProcess | None = None
        self.tls_edge: EdgeProcess | None = None

    def start(self) -> Stack:
        self.origin.start()
        self.redis.start()
        asyncio.run(self._push())
        htpasswd = self.tmp / "edge-users"
        write_entries(htpasswd, {u: hash_password(p, cost=4) for u, p in PASSWORDS.items()})
        upstream = [{"name": "origin", "url": self.origin.url}]
        self.users_edge = start_configured_edge(
            self.tmp / "users-edge",
            upstream,
            name="users",
            top={"auth": {"htpasswd": {"realm": "edge-users", "path": str(htpasswd)}}},
        )
        cert, key = self.peer_cert
        self.tls_edge = start_configured_edge(
            self.tmp / "tls-edge",
            upstream,
            name="tls",
            top={
                "tls": {
                    "certificate": str(self.certs.cert),
                    "key": str(self.certs.key),
                    "clientcas": [str(self.certs.ca_cert)],
                    "peer": {"certificate": str(cert), "key": str(key)},
                },
                "redis": {"url": self.redis.url, "peer_token": PEER_TOKEN},
            },
        )
        return self

    async def _push(self) -> None:
        async with RegistryClient(self.origin.url) as client:
            for data in self.image.blobs().values():
                await client.push_blob(REPO, data)
            await client.push_manifest(REPO, "v1", self.image.manifest, self.image.media_type)

    def close(self) -> None:
        for edge in (self.users_edge, self.tls_edge):
            if edge is not None:
                edge.close()
        self.redis.close()
        self.origin.close()

    def client_context(self, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.certs.ca_cert))
        if cert is not None:
            ctx.load_cert_chain(*cert)
        return ctx


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("edge-users-tls"))
    try:
        yield s.start()
    finally:
        s.close()
    for edge in (s.users_edge, s.tls_edge):
        assert edge is not None
        assert edge.server_errors() == []


# -- edge users ---------------------------------------------------------------------------------
def test_edge_users_need_the_right_credentials(stack: Stack, tmp_path: Path) -> None:
    assert stack.users_edge is not None
    edge = stack.users_edge.url
    path = f"{edge}/v2/{REPO}/manifests/v1"
    for headers in (
        {},
        _basic("puller", "wrong"),
        _basic("nobody", "x"),
        {"Authorization": "Bearer x"},
    ):
        for url in (path, f"{edge}/v2/"):
            reply = request(url, headers={**headers, **ACCEPT})
            assert reply.status == 401, (headers, url)
            assert reply.headers["WWW-Authenticate"] == 'Basic realm="edge-users"'
            assert reply.codes() == ["UNAUTHORIZED"]
            assert stack.image.manifest not in reply.body
    good = _basic("puller", PASSWORDS["puller"])
    assert request(f"{edge}/v2/", headers=good).status == 200
    reply = request(path, headers={**good, **ACCEPT})
    assert reply.status == 200 and reply.body == stack.image.manifest

    out = tmp_path / "pulled"
    skopeo.copy(
        f"docker://{stack.users_edge.host}/{REPO}:v1",
        f"dir:{out}",
        src_creds=f"puller:{PASSWORDS['puller']}",
    )
    assert (out / "manifest.json").read_bytes() == stack.image.manifest
    with pytest.raises(skopeo.SkopeoError):
        skopeo.copy(
            f"docker://{stack.users_edge.host}/{REPO}:v1",
            f"dir:{tmp_path / 'no'}",
            src_creds="puller:nope",
        )


def test_failed_sign_ins_are_throttled_per_address(stack: Stack) -> None:
    assert stack.users_edge is not None
    edge = stack.users_edge.url
    path = f"/v2/{REPO}/manifests/v1"
    statuses = [request(edge + path, headers=_basic("ops", f"guess-{i}")).status for i in range(5)]
    assert statuses == [401] * 5
    blocked = request(edge + path, headers={**_basic("ops", PASSWORDS["ops"]), **ACCEPT})
    assert blocked.status == 429 and blocked.codes() == ["TOOMANYREQUESTS"]
    assert int(blocked.headers["Retry-After"]) >= 1
    # the same user from another address is not locked out by these failures
    status, _headers, body = source_request(
        "127.0.0.1",
        stack.users_edge.port,
        path,
        source="127.0.0.2",
        headers={**_basic("ops", PASSWORDS["ops"]), **ACCEPT},
    )
    assert status == 200 and body == stack.image.manifest


def test_no_user_password_in_the_edge_log(stack: Stack) -> None:
    assert stack.users_edge is not None
    text = stack.users_edge.log_text()
    assert "edge sign-in failed" in text
    for password in PASSWORDS.values():
        assert password not in text


# -- TLS ----------------------------------------------------------------------------------------
def test_skopeo_pulls_over_tls_with_cert_dir(stack: Stack, tmp_path: Path) -> None:
    assert stack.tls_edge is not None
    assert stack.tls_edge.url.startswith("https://")
    out = tmp_path / "pulled"
    skopeo.run(
        [
            "copy",
            "--src-cert-dir",
            str(stack.cert_dir),
            f"docker://{stack.tls_edge.host}/{REPO}:v1",
            f"dir:{out}",
        ]
    )
    assert (out / "manifest.json").read_bytes() == stack.image.manifest
    for digest, data in stack.image.blobs().items():
        assert (out / digest.split(":", 1)[1]).read_bytes() == data
    # without the CA skopeo refuses the edge's certificate
    with pytest.raises(skopeo.SkopeoError):
        skopeo.run(["inspect", "--raw", f"docker://{stack.tls_edge.host}/{REPO}:v1"])


def test_plain_http_to_the_tls_port_gets_gos_400(stack: Stack) -> None:
    assert stack.tls_edge is not None
    port = stack.tls_edge.port
    reply = request(f"http://127.0.0.1:{port}/v2/", timeout=20)  # what `curl http://...` does
    assert reply.status == 400
    assert reply.body == GO_MESSAGE
    assert reply.headers["Content-Type"].startswith("text/plain")
    got = probe("127.0.0.1", port, b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.status_line == b"HTTP/1.0 400 Bad Request" and got.body == GO_MESSAGE
    assert got.ended == "closed" and got.seconds < 5
    assert "plain HTTP on the TLS port refused" in stack.tls_edge.log_text()
    assert stack.tls_edge.running


def test_silent_and_garbage_clients_on_the_tls_port_are_closed(stack: Stack) -> None:
    assert stack.tls_edge is not None
    port = stack.tls_edge.port
    garbage = probe("127.0.0.1", port, b"\x00\x01\x02\x03 not tls, not http\r\n")
    assert garbage.data == b"" and garbage.ended in ("closed", "reset")
    assert garbage.seconds < 5
    silent = probe("127.0.0.1", port, b"", timeout=30)
    assert silent.data == b"" and silent.ended == "closed"
    assert FIRST_BYTE_TIMEOUT - 1 <= silent.seconds < FIRST_BYTE_TIMEOUT + 5
    # TLS clients are still served (aiohttp with the CA, no client certificate)
    assert asyncio.run(_tls_status(f"{stack.tls_edge.url}/v2/", stack.client_context(None))) == 200
    assert stack.tls_edge.running


async def _tls_status(url: str, ctx: ssl.SSLContext) -> int:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        async with session.get(url) as resp:
            return resp.status


def test_peer_endpoint_requires_a_client_certificate_of_the_region(
    stack: Stack, tmp_path: Path
) -> None:
    assert stack.tls_edge is not None
    edge = stack.tls_edge.url
    layer = str(stack.image.layers[0].digest)
    # cache the blob on the node (a pulling client needs no client certificate)
    pulled = request(f"{edge}/v2/{REPO}/blobs/{layer}", context=stack.client_context(None))
    assert pulled.status == 200
    peer_url = f"{edge}/_quayside/peer/blobs/{layer}"
    token = {"X-Quayside-Peer-Token": PEER_TOKEN}

    no_cert = request(peer_url, headers=token, context=stack.client_context(None))
    assert no_cert.status == 403 and no_cert.codes() == ["DENIED"]
    assert stack.image.blobs()[layer] not in no_cert.body

    ca, ca_key = foreign_ca(tmp_path / "foreign")
    stranger = issue_client_cert(ca, ca_key, tmp_path / "foreign", "stranger")
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError, OSError)):
        request(peer_url, headers=token, context=stack.client_context(stranger))

    member = stack.client_context(stack.peer_cert)
    assert request(peer_url, context=member).status == 403  # the peer token is still required
    served = request(peer_url, headers=token, context=member)
    assert served.status == 200 and served.body == stack.image.blobs()[layer]

    # the context a node builds from tls.peer reads the same bytes through PeerSource
    cert, key = stack.peer_cert
    tls = EdgeTLSConfig(
        peer_certificate=str(cert), peer_key=str(key), peer_cas=(str(stack.certs.ca_cert),)
    )
    assert asyncio.run(_peer_read(edge, Digest.parse(layer), tls)) == stack.image.blobs()[layer]


async def _peer_read(edge: str, digest: Digest, tls: EdgeTLSConfig) -> bytes:
    ctx = peer_client_context(tls)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        source = PeerSource(edge, digest, session, token=PEER_TOKEN)
        total, chunks = await source.open(0)
        data = b"".join([c async for c in chunks])
    assert len(data) == total
    return data
