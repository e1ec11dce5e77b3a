"""RegistryClient with a peer's ``tls`` settings (:func:`regcore.tlsclient.client_contexts`)
against in-test HTTPS servers signed by a private CA: the client certificate and the server
name override go to the configured origin only, never to the host a redirect leads to (which
still gets the extra CA and verification), and a certificate that is not trusted fails at once,
named, without retries."""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from harness.clientcerts import issue_client_cert
from regcore import errors
from regcore.auth.tlscerts import CertFiles, init_certs
from regcore.client import RegistryClient
from regcore.digest import Digest
from regcore.tlsclient import ClientTLS, client_contexts

REPO = "team/app"
DATA = os.urandom(4096)
DIGEST = str(Digest.of(DATA))


@pytest.fixture
def pki(tmp_path: Path) -> tuple[CertFiles, tuple[Path, Path]]:
    files = init_certs(tmp_path / "certs", ["127.0.0.1", "127.0.0.2"])
    return files, issue_client_cert(files.ca_cert, files.ca_key, tmp_path / "client", "rep")


def server_context(files: CertFiles) -> ssl.SSLContext:
    """Asks for a client certificate (verified against the CA) but serves callers without."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.cert, files.key)
    ctx.load_verify_locations(files.ca_cert)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def peer_subject(request: web.Request) -> str | None:
    assert request.transport is not None
    cert = request.transport.get_extra_info("peercert")
    return dict(x[0] for x in cert["subject"])["commonName"] if cert else None


async def test_client_certificate_goes_to_the_target_only_not_to_a_redirect_host(
    aiohttp_server: AiohttpServer, pki: tuple[CertFiles, tuple[Path, Path]]
) -> None:
    files, (cert, key) = pki
    seen: dict[str, list[Any]] = {"target": [], "cdn": []}

    async def cdn_blob(request: web.Request) -> web.Response:
        seen["cdn"].append((peer_subject(request), request.headers.get("Authorization")))
        return web.Response(body=DATA)

    cdn_app = web.Application()
    cdn_app.router.add_get("/cdn/blob", cdn_blob)
    cdn = await aiohttp_server(cdn_app, host="127.0.0.2", ssl=server_context(files))

    async def blob(request: web.Request) -> web.Response:
        seen["target"].append((peer_subject(request), request.headers.get("Authorization")))
        return web.Response(status=307, headers={"Location": str(cdn.make_url("/cdn/blob"))})

    app = web.Application()
    app.router.add_get(f"/v2/{REPO}/blobs/{DIGEST}", blob)
    target = await aiohttp_server(app, ssl=server_context(files))
    assert str(target.make_url("")).startswith("https://")

    tls = ClientTLS(ca=str(files.ca_cert), certificate=str(cert), key=str(key))
    async with RegistryClient(
        str(target.make_url("")), token="t0ken", tls=client_contexts(tls)
    ) as client:
        assert await client.get_blob(REPO, DIGEST) == DATA
    assert seen["target"] == [("rep", "Bearer t0ken")]
    assert seen["cdn"] == [(None, None)]  # CA trusted there too, but no certificate, no token


async def test_untrusted_certificate_fails_at_once_and_says_why(
    aiohttp_server: AiohttpServer, pki: tuple[CertFiles, tuple[Path, Path]]
) -> None:
    files, _ = pki
    app = web.Application()
    target = await aiohttp_server(app, ssl=server_context(files))
    hops: list[tuple[str, str, int]] = []
    async with RegistryClient(
        str(target.make_url("")), retries=3, on_request=lambda *a: hops.append(a)
    ) as client:
        with pytest.raises(errors.UpstreamUnavailable) as exc:
            await client.head_blob(REPO, DIGEST)
    assert "not accepted (certificate verify failed:" in str(exc.value)
    assert len(hops) == 1  # not retried: a certificate does not get better by waiting


async def test_servername_and_insecureskipverify(
    aiohttp_server: AiohttpServer, tmp_path: Path, pki: tuple[CertFiles, tuple[Path, Path]]
) -> None:
    files, _ = pki
    named_dir = tmp_path / "named"
    named_dir.mkdir()
    for src in (files.ca_cert, files.ca_key):
        (named_dir / src.name).write_bytes(src.read_bytes())
    named = init_certs(named_dir, ["registry.internal"])  # same CA, not valid for 127.0.0.1

    async def head(request: web.Request) -> web.Response:
        return web.Response(headers={"Content-Length": str(len(DATA))})

    app = web.Application()
    app.router.add_route("HEAD", f"/v2/{REPO}/blobs/{DIGEST}", head)
    target = await aiohttp_server(app, ssl=server_context(named))
    url = str(target.make_url(""))

    async def size(tls: ClientTLS) -> int:
        async with RegistryClient(url, retries=0, tls=client_contexts(tls)) as client:
            return await client.head_blob(REPO, DIGEST)

    with pytest.raises(errors.UpstreamUnavailable, match=re.escape("not valid for '127.0.0.1'")):
        await size(ClientTLS(ca=str(files.ca_cert)))
    assert await size(ClientTLS(ca=str(files.ca_cert), servername="registry.internal")) == 4096
    assert await size(ClientTLS(insecureskipverify=True)) == 4096
