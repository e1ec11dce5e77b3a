"""``quayside scan push``: a Trivy server scans what the image installs; the report gates pulls.

The Trivy server is an in-test HTTP server speaking Trivy's Twirp JSON API (it checks the
token, records what it is sent and answers tests/integration/data/trivy/scan-response.json);
the registry is a real origin process with a scan policy (``required``, CRITICAL); the image
is pushed and pulled by skopeo. The command runs in a thread (it has its own event loop).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import shutil
import socket
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from harness import skopeo
from harness.images import Image, Layer, make_image
from harness.layouts import write_layout
from harness.servers import OriginProcess
from quayside.cli import scan as scan_cli
from regcore.auth.htpasswd import hash_password, write_entries
from regcore.client import RegistryClient

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover - installed by `make install`
    pytest.skip("skopeo is not installed", allow_module_level=True)

ANSWER = json.loads((Path(__file__).parent / "data" / "trivy" / "scan-response.json").read_text())
TOKEN = "s3cret-trivy-token"
OS_RELEASE = (
    b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.18.0\nPRETTY_NAME="Alpine Linux v3.18"\n'
)
APK_DB = (
    b"C:Q1abc=\nP:musl\nV:1.2.4-r0\nA:x86_64\no:musl\n\n"
    b"C:Q1def=\nP:libcrypto3\nV:3.1.0-r4\nA:x86_64\no:openssl\n\n"
    b"C:Q1ghi=\nP:curl\nV:8.1.2-r0\nA:x86_64\no:curl\n"
)


def files_layer(files: dict[str, bytes], seed: int) -> Layer:
    """A gzip'd tar layer holding ``files``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    plain = buf.getvalue()
    data = gzip.compress(plain, mtime=0)
    return Layer(
        data=data,
        digest="sha256:" + hashlib.sha256(data).hexdigest(),
        size=len(data),
        diff_id="sha256:" + hashlib.sha256(plain).hexdigest(),
        seed=seed,
    )


class TrivyStandIn:
    """Trivy's Twirp JSON endpoints: token check, requests recorded, the recorded answer."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Trivy-Token") != TOKEN:
            return web.json_response(
                {"code": "unauthenticated", "msg": "invalid token"}, status=401
            )
        body = await request.json()
        method = request.match_info["method"]
        self.calls.append((method, body))
        if method == "Scan":
            return web.json_response(ANSWER)
        return web.json_response({})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/twirp/{service}/{method}", self.handle)
        return app


CI_PASSWORD = "ci-password-for-tests"
VIEWER_PASSWORD = "viewer-password-for-tests"


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[OriginProcess]:
    """User ``viewer`` may pull (judged by the policy); ``ci`` may push (and reads unjudged)."""
    htpasswd = tmp_path / "htpasswd"
    users = {"ci": CI_PASSWORD, "viewer": VIEWER_PASSWORD}
    write_entries(htpasswd, {u: hash_password(p, cost=6) for u, p in users.items()})
    (tmp_path / "ci.password").write_text(CI_PASSWORD)
    policies = {"scan": [{"name": "no-critical", "repositories": ["team/*"], "required": True}]}
    access = [{"repository": "team/*", "users": {"ci": "developer", "viewer": "viewer"}}]
    config = {
        "version": "0.1",
        "auth": {"htpasswd": {"realm": "quayside-test", "path": str(htpasswd)}},
        "quayside": {"policies": policies, "auth": {"access": access}},
    }
    proc = OriginProcess(root=tmp_path / "root", workdir=tmp_path / "origin", config=config)
    try:
        proc.start()
        yield proc
    finally:
        proc.close()
    assert proc.server_errors() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _scan(*args: str) -> Result:
    runner = CliRunner(env={"COLUMNS": "240"})  # rich wraps error boxes at the width
    return await asyncio.to_thread(runner.invoke, scan_cli.command, ["push", *args])


def _push(img: Image, origin: OriginProcess, tmp_path: Path) -> None:
    layout = tmp_path / f"layout-{img.digest[7:19]}"
    write_layout(layout, {"v1": img})
    dest = f"docker://{origin.host}/team/app:v1"
    skopeo.copy(f"oci:{layout}:v1", dest, preserve_digests=True, dest_creds=f"ci:{CI_PASSWORD}")


async def test_scan_push_attaches_trivys_report_and_the_policy_reads_it(
    origin: OriginProcess, aiohttp_server: Any, tmp_path: Path
) -> None:
    trivy = TrivyStandIn()
    server = await aiohttp_server(trivy.app())
    token = tmp_path / "trivy.token"
    token.write_text(TOKEN + "\n")
    layer = files_layer({"etc/os-release": OS_RELEASE, "lib/apk/db/installed": APK_DB}, 1)
    img = make_image([layer, files_layer({"app/run.sh": b"#!/bin/sh\n"}, 2)], seed=501)
    _push(img, origin, tmp_path)
    out = tmp_path / "pulled"
    src = f"docker://{origin.host}/team/app:v1"
    with pytest.raises(skopeo.SkopeoError, match="no scan report"):
        skopeo.copy(src, f"dir:{out}", src_creds=f"viewer:{VIEWER_PASSWORD}")

    image = f"http://{origin.host}/team/app:v1"
    trivy_url = f"http://127.0.0.1:{server.port}"
    ci = ("--username", "ci", "--password-file", str(tmp_path / "ci.password"))
    dry = await _scan(
        image, *ci, "--trivy-server", trivy_url, "--token-file", str(token), "--dry-run", "--json"
    )
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)[0]["report"] is None
    trivy.calls.clear()

    result = await _scan(
        image, *ci, "--trivy-server", trivy_url, "--token-file", str(token), "--json"
    )
    assert result.exit_code == 0, result.output
    (outcome,) = json.loads(result.output)
    assert outcome["digest"] == img.digest and outcome["packages"] == 3
    assert outcome["findings"] == {"CRITICAL": 1, "HIGH": 1, "MEDIUM": 1}

    # what the Trivy server was sent: each layer's facts, the config, one scan, then cleanup
    methods = [m for m, _ in trivy.calls]
    assert methods == ["PutBlob", "PutBlob", "PutArtifact", "Scan", "DeleteBlobs"]
    first = trivy.calls[0][1]["blob_info"]
    assert first["os"] == {"family": "alpine", "name": "3.18.0"}
    assert first["diff_id"] == layer.diff_id and first["digest"] == layer.digest
    names = [p["name"] for p in first["package_infos"][0]["packages"]]
    assert names == ["musl", "libcrypto3", "curl"]
    assert first["package_infos"][0]["packages"][1]["src_name"] == "openssl"
    scan = trivy.calls[3][1]
    assert scan["blob_ids"] == [trivy.calls[0][1]["diff_id"], trivy.calls[1][1]["diff_id"]]
    assert scan["artifact_id"] == trivy.calls[2][1]["artifact_id"]
    assert trivy.calls[4][1]["blob_ids"] == scan["blob_ids"]

    # the report is a referrer of the image, in Trivy's JSON; the policy now names the CVE
    async with RegistryClient(origin.url, username="ci", password=CI_PASSWORD) as client:
        body, _ = await client.get_referrers("team/app", img.digest)
        (ref,) = json.loads(body)["manifests"]
        assert ref["digest"] == outcome["report"]
        assert ref["artifactType"] == "application/vnd.aquasec.trivy.report.v1+json"
        report_manifest = await client.get_manifest("team/app", ref["digest"])
        layer_digest = json.loads(report_manifest.body)["layers"][0]["digest"]
        report = json.loads(await client.get_blob("team/app", layer_digest))
    assert report["SchemaVersion"] == 2 and report["Metadata"]["RepoDigests"] == [
        f"team/app@{img.digest}"
    ]
    vulns = report["Results"][0]["Vulnerabilities"]
    assert {v["VulnerabilityID"]: v["Severity"] for v in vulns}["CVE-2023-38545"] == "CRITICAL"
    with pytest.raises(skopeo.SkopeoError, match="CVE-2023-38545"):
        skopeo.copy(src, f"dir:{out}", src_creds=f"viewer:{VIEWER_PASSWORD}")
    # the signer / scanner (may push) reads unjudged; a viewer's HEAD is not judged either
    skopeo.copy(src, f"dir:{out}", src_creds=f"ci:{CI_PASSWORD}")
    assert (out / "manifest.json").read_bytes() == img.manifest


async def test_unreachable_or_refusing_trivy_server_is_reported_clearly(
    origin: OriginProcess, aiohttp_server: Any, tmp_path: Path
) -> None:
    img = make_image([files_layer({"etc/os-release": OS_RELEASE}, 3)], seed=502)
    _push(img, origin, tmp_path)
    image = f"http://{origin.host}/team/app:v1"
    port = _free_port()
    ci = ("--username", "ci", "--password-file", str(tmp_path / "ci.password"))
    result = await _scan(image, *ci, "--trivy-server", f"http://127.0.0.1:{port}")
    assert result.exit_code == 1
    assert f"trivy server http://127.0.0.1:{port} is unreachable" in result.output
    trivy = TrivyStandIn()
    server = await aiohttp_server(trivy.app())
    wrong = tmp_path / "wrong.token"
    wrong.write_text("nope")
    url = f"http://127.0.0.1:{server.port}"
    result = await _scan(image, *ci, "--trivy-server", url, "--token-file", str(wrong))
    assert result.exit_code == 1
    assert "refused PutBlob: 401 unauthenticated: invalid token" in result.output
    assert "nope" not in result.output
    result = await _scan(image)
    assert result.exit_code == 2 and "no Trivy server" in result.output
    async with RegistryClient(origin.url, username="ci", password=CI_PASSWORD) as client:
        body, _ = await client.get_referrers("team/app", img.digest)
    assert json.loads(body)["manifests"] == []  # nothing was attached
