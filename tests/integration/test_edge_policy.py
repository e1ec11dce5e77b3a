"""Signature and scan policies at a real edge process in front of a real origin, with skopeo.

The origin (no policy of its own) holds images, cosign signatures (pushed in cosign's format
by :mod:`harness.attachments`) and scan reports attached as referrers; the edge enforces. Its
tag TTL is 1 s, so verdicts (kept for the tag TTL) and the ``.sig`` tag are looked at again
after :data:`TTL_WAIT`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from harness import skopeo
from harness.attachments import (
    SigningKey,
    descriptor,
    push_artifact,
    push_cosign_signature,
    report_artifact,
    trivy_report,
)
from harness.images import KiB, make_image
from harness.servers import EdgeProcess, OriginProcess, ServerGroup
from regcore.client import RegistryClient
from regcore.mediatypes import DEFAULT_ACCEPT

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover - installed by `make install`
    pytest.skip("skopeo is not installed", allow_module_level=True)

TTL = 1.0
TTL_WAIT = TTL + 0.3
TRIVY = "application/vnd.aquasec.trivy.report.v1+json"


def _get(url: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Accept": ", ".join(DEFAULT_ACCEPT)})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _pull(edge: EdgeProcess, ref: str, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    skopeo.copy(f"docker://{edge.host}/{ref}", f"dir:{target}")


def _refused(edge: EdgeProcess, ref: str, target: Path) -> str:
    with pytest.raises(skopeo.SkopeoError) as info:
        _pull(edge, ref, target)
    assert "denied" in info.value.stderr.lower(), info.value.stderr
    return info.value.stderr


@pytest.fixture
def keys(tmp_path: Path) -> tuple[SigningKey, Path]:
    key = SigningKey()
    return key, key.write_public(tmp_path / "cosign.pub")


def _policies(pub: Path) -> dict[str, Any]:
    return {
        "verify": [
            {"name": "team-signed", "repositories": ["team/*"], "keys": [str(pub)]},
            {"name": "lab-warn", "repositories": ["lab/*"], "keys": [str(pub)], "mode": "warn"},
        ],
        "scan": [
            {
                "name": "no-critical",
                "repositories": ["scan/*"],
                "severity": "critical",
                "required": True,
            },
            {"name": "no-critical-but", "repositories": ["scanok/*"], "allow": ["CVE-2024-0001"]},
        ],
    }


@pytest.fixture
def stack(servers: ServerGroup, keys: tuple[SigningKey, Path]) -> tuple[OriginProcess, EdgeProcess]:
    origin = servers.origin(env={"REGISTRY_STORAGE_DELETE_ENABLED": "true"})
    edge = servers.edge(
        [("origin", origin.url)], tag_ttl=TTL, config={"policies": _policies(keys[1])}
    )
    return origin, edge


async def test_signed_pulls_unsigned_and_other_key_refused_though_blobs_cached(
    stack: tuple[OriginProcess, EdgeProcess], keys: tuple[SigningKey, Path], tmp_path: Path
) -> None:
    origin, edge = stack
    key, _ = keys
    img = make_image(layer_sizes=(96 * KiB, 8 * KiB), seed=301)
    skopeo.push(img, origin.host, "team/app", "v1", workdir=tmp_path)
    out = tmp_path / "pulled"
    async with RegistryClient(origin.url) as client:
        sig = await push_cosign_signature(client, "team/app", img.digest, key)
        _pull(edge, "team/app:v1", out)
        assert (out / "manifest.json").read_bytes() == img.manifest
        for _ in range(3):  # verified once per digest within the TTL
            _pull(edge, f"team/app@{img.digest}", out)
        assert edge.metric("quayside_edge_policy_evaluations", policy="team-signed") == 1
        assert edge.metric("quayside_edge_policy_decisions", outcome="allowed") == 4

        # the signature removed upstream: refused once the TTL has passed
        await client.delete_manifest("team/app", sig.digest)
        await asyncio.sleep(TTL_WAIT)
        stderr = _refused(edge, "team/app:v1", out)
        assert "team-signed" in stderr and "no signature found" in stderr
        _refused(edge, f"team/app@{img.digest}", out)
        # ... while its blobs are still served from the edge's cache
        hits = edge.metric("quayside_edge_cache_hits", kind="blob")
        for digest, data in img.blobs().items():
            assert _get(f"{edge.url}/v2/team/app/blobs/{digest}") == (200, data)
        assert edge.metric("quayside_edge_cache_hits", kind="blob") == hits + len(img.blobs())

        # signed by another key: still refused
        await push_cosign_signature(client, "team/app", img.digest, SigningKey())
        await asyncio.sleep(TTL_WAIT)
        assert "not signed by a trusted key" in _refused(edge, "team/app:v1", out)

        # a good signature pushed upstream is picked up within the tag TTL
        await push_cosign_signature(client, "team/app", img.digest, key)
        await asyncio.sleep(TTL_WAIT)
        _pull(edge, "team/app:v1", out)
    assert edge.metric("quayside_edge_policy_decisions", outcome="denied") == 3
    assert edge.server_errors() == [] and origin.server_errors() == []


async def test_warn_serves_and_counts(
    stack: tuple[OriginProcess, EdgeProcess], tmp_path: Path
) -> None:
    origin, edge = stack
    img = make_image(layer_sizes=(16 * KiB,), seed=311)
    skopeo.push(img, origin.host, "lab/app", "v1", workdir=tmp_path)
    _pull(edge, "lab/app:v1", tmp_path / "pulled")
    assert (tmp_path / "pulled" / "manifest.json").read_bytes() == img.manifest
    assert edge.metric("quayside_edge_policy_decisions", policy="lab-warn", outcome="warned") == 1
    # not judged: no policy names the repository
    skopeo.push(img, origin.host, "other/app", "v1", workdir=tmp_path)
    _pull(edge, "other/app:v1", tmp_path / "pulled")
    assert edge.metric("quayside_edge_policy_decisions") == 1


async def test_scan_reports_gate_pulls(
    stack: tuple[OriginProcess, EdgeProcess], tmp_path: Path
) -> None:
    origin, edge = stack
    img = make_image(layer_sizes=(16 * KiB,), seed=321)
    subject = descriptor(img.media_type, img.manifest)
    critical = report_artifact(
        TRIVY, trivy_report(("CVE-2024-0001", "CRITICAL"), ("CVE-2024-0002", "LOW")), subject
    )
    clean = report_artifact(
        TRIVY, trivy_report(("CVE-2024-0002", "LOW")), subject, created="2026-02-01T00:00:00Z"
    )
    async with RegistryClient(origin.url) as client:
        for repo in ("scan/crit", "scanok/crit", "scan/none", "scan/clean"):
            skopeo.push(img, origin.host, repo, "v1", workdir=tmp_path)
        for repo in ("scan/crit", "scanok/crit", "scan/clean"):
            await push_artifact(client, repo, critical)
        await push_artifact(client, "scan/clean", clean)
    out = tmp_path / "pulled"
    stderr = _refused(edge, "scan/crit:v1", out)
    assert "no-critical" in stderr and "CVE-2024-0001" in stderr
    _pull(edge, "scanok/crit:v1", out)  # the CVE is allow-listed there
    assert "no scan report" in _refused(edge, "scan/none:v1", out)
    _pull(edge, "scan/clean:v1", out)  # the newest report is clean

    # the referrers list came from the origin once and then from the edge's cache
    status, body = _get(f"{edge.url}/v2/scan/clean/referrers/{img.digest}")
    assert status == 200 and len(json.loads(body)["manifests"]) == 2
    status, body = _get(
        f"{edge.url}/v2/scan/clean/referrers/{img.digest}?artifactType={quote(TRIVY)}"
    )
    assert status == 200 and len(json.loads(body)["manifests"]) == 2
    assert edge.metric("quayside_edge_cache_hits", kind="referrers") >= 2
