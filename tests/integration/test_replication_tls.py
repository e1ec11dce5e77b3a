"""Replication from a plain origin to origins served over TLS with a private CA (``quayside
certs init``): the target's ``tls`` settings (ca, certificate + key for mTLS, servername,
insecureskipverify) decide whether the target is reached, and a refusal is logged naming the
certificate problem. Each test first shows the failure without the setting, then the same
queued job delivered once the origin restarts with it."""

from __future__ import annotations

import json
import shutil
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness import skopeo
from harness.clientcerts import issue_client_cert
from harness.fixtures import ImageFactory
from harness.images import KiB
from harness.procs import wait_until
from harness.servers import OriginProcess
from quayside.cli import certs as certs_cli
from regcore.auth.tlscerts import init_certs
from regcore.client import DEFAULT_MANIFEST_ACCEPT

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover - installed by `make install`
    pytest.skip("skopeo is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``quayside certs init`` output (ca.crt, server.crt for 127.0.0.1) plus a client
    certificate of the same CA in ``replicator/``."""
    out = tmp_path_factory.mktemp("pki") / "certs"
    result = CliRunner().invoke(
        certs_cli.command, ["init", "--hosts", "127.0.0.1,localhost", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    issue_client_cert(out / "ca.crt", out / "ca.key", out / "replicator", "replicator")
    return out


def tls_target(tmp: Path, tls: dict[str, Any]) -> OriginProcess:
    return OriginProcess(
        root=tmp / "target-root", workdir=tmp / "target", config={"http": {"tls": tls}}
    ).start()


def source_config(targets: list[dict[str, Any]]) -> dict[str, Any]:
    common = {"backoff": "300ms", "timeout": "10s"}
    return {
        "quayside": {
            "replication": {
                "reconcile": {"interval": 0},
                "targets": [common | t for t in targets],
            }
        }
    }


def start_source(tmp: Path, targets: list[dict[str, Any]]) -> OriginProcess:
    return OriginProcess(
        root=tmp / "root", workdir=tmp / "origin", config=source_config(targets)
    ).start()


def client_context(certs: Path, *, client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if client_cert:
        ctx.load_cert_chain(
            certs / "replicator" / "replicator.crt", certs / "replicator" / "replicator.key"
        )
    return ctx


def on_target(target: OriginProcess, ref: str, ctx: ssl.SSLContext) -> bytes | None:
    repo, tag = ref.rsplit(":", 1)
    req = urllib.request.Request(
        f"{target.url}/v2/{repo}/manifests/{tag}",
        headers={"Accept": ", ".join(DEFAULT_MANIFEST_ACCEPT)},
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def failures(origin: OriginProcess, target: str = "dr") -> list[str]:
    """The errors the replication worker of ``target`` logged for failed attempts."""
    out = []
    for line in origin.log_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("worker") == f"replication-{target}":
            out.append(str(event.get("error", "")))
    return out


def test_private_ca_target_is_refused_without_tls_ca_and_reached_with_it(
    tmp_path: Path, certs: Path, image_factory: ImageFactory
) -> None:
    target = tls_target(
        tmp_path, {"certificate": str(certs / "server.crt"), "key": str(certs / "server.key")}
    )
    entry: dict[str, Any] = {"name": "dr", "url": target.url, "repositories": ["team/*"]}
    source = start_source(tmp_path, [entry])
    try:
        image = image_factory.image(layer_sizes=(64 * KiB,))
        skopeo.push(image, source.host, "team/app", "1", workdir=tmp_path)
        assert wait_until(lambda: failures(source), timeout=30), source.log_tail()
        error = failures(source)[0]
        assert "TLS certificate of 127.0.0.1" in error, error
        assert "not accepted (certificate verify failed: self-signed certificate" in error
        assert on_target(target, "team/app:1", client_context(certs)) is None

        entry["tls"] = {"ca": str(certs / "ca.crt")}
        source.config = source_config([entry])
        source.restart()
        assert wait_until(
            lambda: on_target(target, "team/app:1", client_context(certs)) == image.manifest,
            timeout=30,
        ), source.log_tail()
        assert failures(source) == []
    finally:
        source.close()
        target.close()
    assert source.server_errors() == [] and target.server_errors() == []


def test_mtls_target_refuses_a_source_without_client_certificate_and_takes_one_with_it(
    tmp_path: Path, certs: Path, image_factory: ImageFactory
) -> None:
    target = tls_target(
        tmp_path,
        {
            "certificate": str(certs / "server.crt"),
            "key": str(certs / "server.key"),
            "clientcas": [str(certs / "ca.crt")],
        },
    )
    entry: dict[str, Any] = {
        "name": "dr",
        "url": target.url,
        "repositories": ["team/*"],
        "tls": {"ca": str(certs / "ca.crt")},
    }
    source = start_source(tmp_path, [entry])
    with_cert = client_context(certs, client_cert=True)
    try:
        image = image_factory.image(layer_sizes=(64 * KiB,))
        skopeo.push(image, source.host, "team/mtls", "v1", workdir=tmp_path)
        assert wait_until(lambda: failures(source), timeout=30), source.log_tail()
        assert "no TLS client certificate was presented" in failures(source)[0]
        assert on_target(target, "team/mtls:v1", with_cert) is None

        entry["tls"] |= {
            "certificate": str(certs / "replicator" / "replicator.crt"),
            "key": str(certs / "replicator" / "replicator.key"),
        }
        source.config = source_config([entry])
        source.restart()
        assert wait_until(
            lambda: on_target(target, "team/mtls:v1", with_cert) == image.manifest, timeout=30
        ), source.log_tail()
        assert failures(source) == []
    finally:
        source.close()
        target.close()


def test_servername_override_and_insecureskipverify_with_its_warning(
    tmp_path: Path, certs: Path, image_factory: ImageFactory
) -> None:
    # A certificate of the same CA that names only registry.internal, not 127.0.0.1.
    named = tmp_path / "named"
    named.mkdir()
    for f in ("ca.crt", "ca.key"):
        shutil.copy(certs / f, named / f)
    init_certs(named, ["registry.internal"])
    target = tls_target(
        tmp_path, {"certificate": str(named / "server.crt"), "key": str(named / "server.key")}
    )
    ca = str(certs / "ca.crt")
    source = start_source(
        tmp_path,
        [
            {"name": "plain", "url": target.url, "repositories": ["a/*"], "tls": {"ca": ca}},
            {
                "name": "named",
                "url": target.url,
                "repositories": ["b/*"],
                "tls": {"ca": ca, "servername": "registry.internal"},
            },
            {
                "name": "skip",
                "url": target.url,
                "repositories": ["c/*"],
                "tls": {"insecureskipverify": True},
            },
        ],
    )
    try:
        image = image_factory.image(layer_sizes=(32 * KiB,))
        for repo in ("a/app", "b/app", "c/app"):
            skopeo.push(image, source.host, repo, "1", workdir=tmp_path)
        unverified = ssl._create_unverified_context()
        assert wait_until(
            lambda: all(
                on_target(target, f"{r}/app:1", unverified) == image.manifest for r in "bc"
            ),
            timeout=30,
        ), source.log_tail()
        assert wait_until(lambda: failures(source, "plain"), timeout=30)
        assert "mismatch, certificate is not valid for '127.0.0.1'" in failures(source, "plain")[0]
        assert on_target(target, "a/app:1", unverified) is None
        assert failures(source, "named") == [] and failures(source, "skip") == []
        warnings = [
            json.loads(line)
            for line in source.log_text().splitlines()
            if "TLS VERIFICATION DISABLED" in line
        ]
        assert [w.get("target") for w in warnings] == ["skip"]
        assert warnings[0]["level"].lower().startswith("warn")
    finally:
        source.close()
        target.close()
