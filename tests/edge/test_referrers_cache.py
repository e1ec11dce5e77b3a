"""The edge answers the referrers API from cache, kept like a tag; policies judge manifests.

Upstreams are real: our origin process (it has the referrers API) and docker-registry 2.8
(it has none). The edge runs in-process on a fake clock, so TTLs are crossed without sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client import CollectorRegistry

from edge.app import create_app
from edge.config import load_edge_config
from harness.attachments import (
    SigningKey,
    descriptor,
    push_artifact,
    push_cosign_signature,
    report_artifact,
    trivy_report,
)
from harness.images import KiB, make_image
from harness.registry import DockerRegistry
from harness.servers import OriginProcess
from regcore.client import RegistryClient
from tests.edge.conftest import OCI_ACCEPT, FakeClock, RunningEdge, push

TRIVY = "application/vnd.aquasec.trivy.report.v1+json"
SARIF = "application/sarif+json"


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[OriginProcess]:
    proc = OriginProcess(
        root=tmp_path / "root",
        workdir=tmp_path / "origin",
        env={"REGISTRY_STORAGE_DELETE_ENABLED": "true"},
    )
    try:
        proc.start()
        yield proc
    finally:
        proc.close()


async def _edge(
    aiohttp_client: Any, tmp_path: Path, url: str, policies: dict[str, Any] | None = None
) -> RunningEdge:
    overrides: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "cache": {"dir": str(tmp_path / "edge-cache"), "size": 64 * 1024 * 1024},
        "tags": {"ttl": 30, "revalidate_timeout": 1.0},
        "upstreams": [
            {"name": "up", "url": url, "timeouts": {"connect": 1, "read": 2}, "retries": 1}
        ],
    }
    if policies is not None:
        overrides["policies"] = policies
    config = load_edge_config(None, {}, overrides)
    clock, registry = FakeClock(), CollectorRegistry()
    client = await aiohttp_client(create_app(config, clock=clock, registry=registry))
    return RunningEdge(client=client, config=config, registry=registry, clock=clock)


async def test_referrers_are_cached_filtered_here_refreshed_after_ttl_and_stale_when_down(
    origin: OriginProcess, aiohttp_client: Any, tmp_path: Path
) -> None:
    img = make_image(layer_sizes=(8 * KiB,), seed=401)
    subject = descriptor(img.media_type, img.manifest)
    await push(origin.url, "team/app", "v1", img)
    async with RegistryClient(origin.url) as up:
        await push_artifact(up, "team/app", report_artifact(TRIVY, trivy_report(), subject))
        await push_artifact(up, "team/app", report_artifact(SARIF, b'{"runs": []}', subject))
    e = await _edge(aiohttp_client, tmp_path, origin.url)
    path = f"/v2/team/app/referrers/{img.digest}"
    resp = await e.client.get(path)
    assert (
        resp.status == 200
        and resp.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    )
    assert {d["artifactType"] for d in (await resp.json())["manifests"]} == {TRIVY, SARIF}
    resp = await e.client.get(f"{path}?artifactType={quote(SARIF)}")
    doc = await resp.json()
    assert [d["artifactType"] for d in doc["manifests"]] == [SARIF]
    assert resp.headers["OCI-Filters-Applied"] == "artifactType"
    assert e.metric("cache_misses", kind="referrers") == 1
    assert e.metric("cache_hits", kind="referrers") == 1

    async with RegistryClient(origin.url) as up:  # a new report attached upstream
        await push_artifact(
            up, "team/app", report_artifact(TRIVY, trivy_report(("CVE-1", "LOW")), subject)
        )
    assert len((await (await e.client.get(path)).json())["manifests"]) == 2  # within the TTL
    e.clock.advance(31)
    assert len((await (await e.client.get(path)).json())["manifests"]) == 3
    origin.kill()
    e.clock.advance(31)
    resp = await e.client.get(path)
    assert resp.status == 200 and len((await resp.json())["manifests"]) == 3
    assert e.metric("stale_serves", upstream="up") == 1
    resp = await e.client.get(f"/v2/team/app/referrers/sha256:{'0' * 64}")  # never seen
    assert resp.status in (502, 504)


async def test_upstream_without_referrers_api_is_remembered(
    docker_registry: DockerRegistry, aiohttp_client: Any, tmp_path: Path
) -> None:
    img = make_image(layer_sizes=(8 * KiB,), seed=402)
    await push(docker_registry.url, "team/app", "v1", img)
    e = await _edge(aiohttp_client, tmp_path, docker_registry.url)
    path = f"/v2/team/app/referrers/{img.digest}"
    for _ in range(3):
        resp = await e.client.get(path)
        assert resp.status == 404 and (await resp.json())["errors"][0]["code"]
    docker_registry.wait_quiet()
    assert docker_registry.count("GET", "/referrers/") == 1


async def test_verdicts_per_digest_for_the_tag_ttl_then_looked_at_again(
    origin: OriginProcess, aiohttp_client: Any, tmp_path: Path
) -> None:
    key = SigningKey("rsa")
    pub = key.write_public(tmp_path / "cosign.pub")
    policies = {"verify": [{"name": "signed", "repositories": ["team/*"], "keys": [str(pub)]}]}
    img = make_image(layer_sizes=(8 * KiB,), seed=403)
    await push(origin.url, "team/app", "v1", img)
    e = await _edge(aiohttp_client, tmp_path, origin.url, policies)
    headers = {"Accept": OCI_ACCEPT}
    resp = await e.client.get("/v2/team/app/manifests/v1", headers=headers)
    assert resp.status == 403
    err = (await resp.json())["errors"][0]
    assert err["code"] == "DENIED" and "verify policy 'signed'" in err["message"]
    async with RegistryClient(origin.url) as up:
        await push_cosign_signature(up, "team/app", img.digest, key)
    assert (await e.client.get("/v2/team/app/manifests/v1", headers=headers)).status == 403
    # HEAD serves no content and is not judged (cosign resolves digests with it)
    resp = await e.client.head("/v2/team/app/manifests/v1", headers=headers)
    assert resp.status == 200 and resp.headers["Docker-Content-Digest"] == img.digest
    e.clock.advance(31)  # the negative verdict expires at the tag TTL
    resp = await e.client.get("/v2/team/app/manifests/v1", headers=headers)
    assert resp.status == 200 and await resp.read() == img.manifest
    for _ in range(3):
        resp = await e.client.get(f"/v2/team/app/manifests/{img.digest}", headers=headers)
        assert resp.status == 200 and await resp.read() == img.manifest
    assert e.metric("policy_evaluations", kind="verify", policy="signed", how="evaluated") == 2
    # upstream gone: the last verdict and the cached manifest keep serving
    origin.kill()
    e.clock.advance(31)
    resp = await e.client.get(f"/v2/team/app/manifests/{img.digest}", headers=headers)
    assert resp.status == 200
    assert e.metric("policy_decisions", kind="verify", policy="signed", outcome="allowed") == 5
    json.dumps(err)  # the error body is plain JSON (no internal URL inside)
    assert "127.0.0.1" not in json.dumps(err)
