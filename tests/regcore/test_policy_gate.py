"""The pull gate: modes, verdict reuse and expiry, index children, artifacts, failures."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from harness.attachments import (
    MemoryRepository,
    SigningKey,
    cosign_signature,
    descriptor,
    report_artifact,
    trivy_report,
)
from regcore import errors
from regcore.policy import signatures as sg
from regcore.policy.gate import PolicyGate
from regcore.policy.keys import load_public_key
from regcore.policyconfig import PoliciesConfig, ScanPolicy, VerifyPolicy

IMAGE = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'
    + b"c" * 64
    + b'","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:'
    + b"d" * 64
    + b'","size":3}]}'
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.decisions: list[tuple[str, str, str]] = []
        self.evaluations: list[tuple[Any, ...]] = []

    def decision(self, kind: str, policy: str, outcome: str) -> None:
        self.decisions.append((kind, policy, outcome))

    def evaluation(self, *args: Any) -> None:
        self.evaluations.append(args)


def _gate(
    key: SigningKey, *, mode: str = "enforce", ttl: float = 30.0, scan: ScanPolicy | None = None
):  # type: ignore[no-untyped-def]
    verify = VerifyPolicy(
        "team-signed", ("team/*",), (load_public_key(key.public_pem(), "cosign.pub"),), mode
    )
    config = PoliciesConfig(verify=(verify,), scan=(scan,) if scan else ())
    clock, rec = Clock(), Recorder()
    gate = PolicyGate(
        config, ttl=ttl, clock=clock, on_decision=rec.decision, on_evaluation=rec.evaluation
    )
    return gate, clock, rec


async def test_signed_passes_unsigned_is_denied_naming_the_policy() -> None:
    key = SigningKey()
    gate, _, rec = _gate(key)
    repo = MemoryRepository()
    digest = repo.add_manifest(IMAGE, "v1")
    with pytest.raises(errors.Denied) as info:
        await gate.check("team/app", digest, repo, IMAGE)
    assert info.value.status == 403 and info.value.code == "DENIED"
    assert (
        "verify policy 'team-signed'" in info.value.msg and "no signature found" in info.value.msg
    )
    assert info.value.detail == {"policy": "team-signed", "kind": "verify", "digest": digest}
    # other repositories are not judged
    await gate.check("other/app", digest, repo, IMAGE)
    assert rec.decisions == [("verify", "team-signed", "denied")]


async def test_verdicts_are_reused_within_ttl_and_expire_at_it() -> None:
    key = SigningKey()
    gate, clock, rec = _gate(key, ttl=30.0)
    repo = MemoryRepository()
    digest = repo.add_manifest(IMAGE, "v1")
    with pytest.raises(errors.Denied):
        await gate.check("team/app", digest, repo, IMAGE)
    repo.add(cosign_signature(digest, key), sg.signature_tag(digest))
    clock.now += 29
    with pytest.raises(errors.Denied):  # negative verdict still fresh
        await gate.check("team/app", digest, repo, IMAGE)
    clock.now += 2
    await gate.check("team/app", digest, repo, IMAGE)  # signature picked up
    reads = repo.reads
    for _ in range(5):
        await gate.check("team/app", digest, repo, IMAGE)
    assert repo.reads == reads  # positive verdict reused: no lookups
    assert len(rec.evaluations) == 2
    del repo.tags[sg.signature_tag(digest)]  # signature removed upstream
    clock.now += 31
    with pytest.raises(errors.Denied):
        await gate.check("team/app", digest, repo, IMAGE)


async def test_warn_serves_and_counts_off_does_nothing() -> None:
    key = SigningKey()
    gate, _, rec = _gate(key, mode="warn")
    repo = MemoryRepository()
    digest = repo.add_manifest(IMAGE, "v1")
    await gate.check("team/app", digest, repo, IMAGE)
    assert rec.decisions == [("verify", "team-signed", "warned")]
    gate, _, rec = _gate(key, mode="off")
    await gate.check("team/app", digest, repo, IMAGE)
    assert rec.decisions == [] and not gate.active


async def test_artifacts_pass_and_children_of_a_passing_index_pass() -> None:
    key = SigningKey()
    gate, clock, _ = _gate(key)
    repo = MemoryRepository()
    child = repo.add_manifest(IMAGE)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [descriptor("application/vnd.oci.image.manifest.v1+json", IMAGE)],
        }
    ).encode()
    digest = repo.add_manifest(index, "v1")
    sig = cosign_signature(digest, key)
    repo.add(sig, sg.signature_tag(digest))
    # the signature manifest itself is an artifact: pullable under enforce
    await gate.check("team/app", sig.digest, repo, sig.manifest)
    with pytest.raises(errors.Denied):  # the child alone, before its index passed
        await gate.check("team/app", child, repo, IMAGE)
    await gate.check("team/app", digest, repo)  # body loaded through the source
    await gate.check("team/app", child, repo, IMAGE)
    clock.now += 601
    with pytest.raises(errors.Denied):
        await gate.check("team/app", child, repo, IMAGE)


async def test_scan_and_verify_both_judge_and_both_refusals_are_reported() -> None:
    key = SigningKey()
    scan = ScanPolicy("no-critical", ("team/**",), severity="CRITICAL", required=True)
    gate, _, rec = _gate(key, scan=scan)
    repo = MemoryRepository()
    digest = repo.add_manifest(IMAGE, "v1")
    with pytest.raises(errors.RegistryErrors) as info:
        await gate.check("team/app", digest, repo, IMAGE)
    messages = [e["message"] for e in info.value.entries()]
    assert any("verify policy 'team-signed'" in m for m in messages)
    assert any("scan policy 'no-critical'" in m and "no scan report" in m for m in messages)
    repo.add(cosign_signature(digest, key), sg.signature_tag(digest))
    subject = descriptor("application/vnd.oci.image.manifest.v1+json", IMAGE)
    repo.add(report_artifact("application/sarif+json", b'{"runs": []}', subject))
    gate, _, rec = _gate(key, scan=scan)
    await gate.check("team/app", digest, repo, IMAGE)
    assert rec.decisions == [
        ("verify", "team-signed", "allowed"),
        ("scan", "no-critical", "allowed"),
    ]
    repo.add(
        report_artifact(
            "application/vnd.aquasec.trivy.report.v1+json",
            trivy_report(("CVE-2024-9", "CRITICAL")),
            subject,
            created="2027-01-01T00:00:00Z",
        )
    )
    gate, _, _ = _gate(key, scan=scan)
    with pytest.raises(errors.Denied, match="CVE-2024-9"):
        await gate.check("team/app", digest, repo, IMAGE)


class FlakySource(MemoryRepository):
    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.gate_open = asyncio.Event()
        self.gate_open.set()

    async def manifest(self, reference: str):  # type: ignore[no-untyped-def]
        await self.gate_open.wait()
        if self.down:
            raise errors.UpstreamUnavailable({"reference": reference})
        return await super().manifest(reference)


async def test_last_known_verdict_is_used_when_evidence_is_unavailable() -> None:
    key = SigningKey()
    gate, clock, rec = _gate(key)
    repo = FlakySource()
    digest = repo.add_manifest(IMAGE, "v1")
    repo.add(cosign_signature(digest, key), sg.signature_tag(digest))
    await gate.check("team/app", digest, repo, IMAGE)
    repo.down = True
    clock.now += 60
    await gate.check("team/app", digest, repo, IMAGE)
    assert ("verify", "team-signed", "stale") in rec.evaluations
    fresh = repo.add_manifest(IMAGE.replace(b"c" * 64, b"e" * 64))
    with pytest.raises(errors.UpstreamUnavailable):  # nothing known: the failure shows
        await gate.check("team/app", fresh, repo, IMAGE.replace(b"c" * 64, b"e" * 64))


async def test_concurrent_checks_of_one_digest_evaluate_once() -> None:
    key = SigningKey()
    gate, _, rec = _gate(key)
    repo = FlakySource()
    digest = repo.add_manifest(IMAGE, "v1")
    repo.add(cosign_signature(digest, key), sg.signature_tag(digest))
    repo.gate_open.clear()
    checks = [asyncio.create_task(gate.check("team/app", digest, repo, IMAGE)) for _ in range(10)]
    await asyncio.sleep(0.05)
    repo.gate_open.set()
    await asyncio.gather(*checks)
    assert len(rec.evaluations) == 1
    assert rec.decisions.count(("verify", "team-signed", "allowed")) == 10
