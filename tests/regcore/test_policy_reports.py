"""Scan reports: Trivy JSON (and cosign-vuln), SARIF, CycloneDX with VEX; the scan verdict."""

from __future__ import annotations

import json

import pytest

from harness.attachments import MemoryRepository, descriptor, report_artifact, trivy_report
from regcore.policy.evidence import ReportMemo, scan_reports
from regcore.policy.reports import Finding, parse_report, report_format
from regcore.policy.verdicts import judge_scan
from regcore.policyconfig import ScanPolicy

IMAGE = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'
    + b"b" * 64
    + b'","size":2},"layers":[]}'
)
SUBJECT = descriptor("application/vnd.oci.image.manifest.v1+json", IMAGE)
TRIVY = "application/vnd.aquasec.trivy.report.v1+json"

# Trivy's SARIF (trivy image -f sarif), trimmed: severity in the rule's tags and score
SARIF = {
    "version": "2.1.0",
    "$schema": "https://json.schemastore.org/sarif-2.1.0-rtm.5.json",
    "runs": [
        {
            "tool": {
                "driver": {
                    "name": "Trivy",
                    "rules": [
                        {
                            "id": "CVE-2023-0286",
                            "defaultConfiguration": {"level": "error"},
                            "properties": {
                                "security-severity": "7.4",
                                "tags": ["vulnerability", "security", "HIGH"],
                            },
                        },
                        {
                            "id": "CVE-2022-3602",
                            "properties": {"security-severity": "9.8", "tags": ["vulnerability"]},
                        },
                        {"id": "CVE-2021-0001", "properties": {}},
                    ],
                }
            },
            "results": [
                {"ruleId": "CVE-2023-0286", "ruleIndex": 0, "level": "error"},
                {"ruleId": "CVE-2022-3602", "ruleIndex": 1, "level": "error"},
                {"ruleId": "CVE-2021-0001", "ruleIndex": 2, "level": "note"},
            ],
        }
    ],
}

CYCLONEDX = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.5",
    "vulnerabilities": [
        {"id": "CVE-2024-1111", "ratings": [{"severity": "medium"}, {"severity": "critical"}]},
        {"id": "CVE-2024-2222", "ratings": [{"severity": "low"}]},
        {
            "id": "CVE-2024-3333",
            "ratings": [{"severity": "critical"}],
            "analysis": {"state": "not_affected"},
        },
    ],
}
VEX = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.5",
    "vulnerabilities": [
        {
            "id": "CVE-2024-0001",
            "analysis": {"state": "not_affected", "justification": "code_not_reachable"},
        }
    ],
}


def test_trivy_json_and_its_cosign_vuln_wrapping() -> None:
    body = trivy_report(("CVE-2024-0001", "CRITICAL"), ("CVE-2024-0002", "LOW"))
    report = parse_report("trivy", body)
    assert report.findings == (
        Finding("CVE-2024-0001", "CRITICAL", "openssl"),
        Finding("CVE-2024-0002", "LOW", "openssl"),
    )
    predicate = {
        "invocation": {},
        "scanner": {"uri": "pkg:github/aquasecurity/trivy", "result": json.loads(body)},
    }
    assert parse_report("trivy", json.dumps(predicate).encode()).findings == report.findings
    statement = {"_type": "https://in-toto.io/Statement/v0.1", "predicate": predicate}
    assert parse_report("trivy", json.dumps(statement).encode()).findings == report.findings
    clean = parse_report("trivy", b'{"SchemaVersion": 2, "ArtifactName": "x"}')
    assert clean.findings == () and clean.scanned


def test_sarif_severity_from_tags_then_score_then_level() -> None:
    report = parse_report("sarif", json.dumps(SARIF).encode())
    assert [(f.id, f.severity) for f in report.findings] == [
        ("CVE-2023-0286", "HIGH"),
        ("CVE-2022-3602", "CRITICAL"),
        ("CVE-2021-0001", "LOW"),
    ]


def test_cyclonedx_findings_and_vex_suppressions() -> None:
    report = parse_report("cyclonedx", json.dumps(CYCLONEDX).encode())
    assert [(f.id, f.severity) for f in report.findings] == [
        ("CVE-2024-1111", "CRITICAL"),
        ("CVE-2024-2222", "LOW"),
    ]
    assert report.suppressed == {"CVE-2024-3333"} and report.scanned
    vex = parse_report("cyclonedx", json.dumps(VEX).encode())
    assert vex.findings == () and vex.suppressed == {"CVE-2024-0001"} and not vex.scanned
    sbom = parse_report("cyclonedx", b'{"bomFormat": "CycloneDX", "components": []}')
    assert not sbom.scanned


@pytest.mark.parametrize(
    ("fmt", "body", "match"),
    [
        ("trivy", b"[]", "not a JSON object"),
        ("trivy", b"{}", "no Results"),
        ("sarif", b"{}", "no runs"),
        ("cyclonedx", b"{}", "not a CycloneDX"),
        ("sarif", b"\xff", "not JSON"),
    ],
)
def test_unreadable_reports_raise(fmt: str, body: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_report(fmt, body)


def test_report_formats_by_artifact_type() -> None:
    assert report_format(TRIVY) == "trivy"
    assert report_format("application/json") == "trivy"  # trivy-plugin-referrer cosign-vuln
    assert report_format("application/sarif+json") == "sarif"
    assert report_format("application/vnd.cyclonedx+json; version=1.5") == "cyclonedx"
    assert report_format("application/spdx+json") is None


async def _verdict(repo: MemoryRepository, digest: str, policy: ScanPolicy):  # type: ignore[no-untyped-def]
    reports, notes = await scan_reports(repo, digest, ReportMemo())
    return judge_scan(policy, reports, notes)


async def test_newest_report_decides_allow_list_and_vex_apply() -> None:
    repo = MemoryRepository()
    digest = repo.add_manifest(IMAGE, "v1")
    policy = ScanPolicy("no-critical", ("*",), severity="CRITICAL")
    repo.add(
        report_artifact(
            TRIVY,
            trivy_report(("CVE-2024-0001", "CRITICAL")),
            SUBJECT,
            created="2026-01-01T00:00:00Z",
        )
    )
    verdict = await _verdict(repo, digest, policy)
    assert (
        not verdict.ok
        and "CVE-2024-0001" in verdict.reason
        and "at or above CRITICAL" in verdict.reason
    )
    allowed = ScanPolicy("no-critical", ("*",), allow=frozenset({"CVE-2024-0001"}))
    assert (await _verdict(repo, digest, allowed)).ok
    # a newer clean report (SARIF this time) replaces it
    clean = {
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "Trivy", "rules": []}}, "results": []}],
    }
    repo.add(
        report_artifact(
            "application/sarif+json",
            json.dumps(clean).encode(),
            SUBJECT,
            created="2026-02-01T00:00:00Z",
        )
    )
    assert (await _verdict(repo, digest, policy)).ok
    # a still newer report with the finding again, then a VEX saying it does not apply
    repo.add(
        report_artifact(
            TRIVY,
            trivy_report(("CVE-2024-0001", "CRITICAL")),
            SUBJECT,
            created="2026-03-01T00:00:00Z",
        )
    )
    assert not (await _verdict(repo, digest, policy)).ok
    repo.add(
        report_artifact(
            "application/vnd.cyclonedx+json",
            json.dumps(VEX).encode(),
            SUBJECT,
            created="2026-04-01T00:00:00Z",
        )
    )
    verdict = await _verdict(repo, digest, policy)
    assert verdict.ok, verdict.reason


async def test_required_report_and_severity_threshold() -> None:
    repo = MemoryRepository()
    digest = repo.add_manifest(IMAGE, "v1")
    required = ScanPolicy("must-scan", ("*",), required=True)
    verdict = await _verdict(repo, digest, required)
    assert not verdict.ok and "no scan report" in verdict.reason
    assert (await _verdict(repo, digest, ScanPolicy("may-scan", ("*",)))).ok
    # the plugin's form: report type as config type, artifact.created annotation
    body = trivy_report(("CVE-2024-0009", "HIGH"))
    repo.add(report_artifact("application/json", body, SUBJECT, config_typed=True))
    assert (await _verdict(repo, digest, required)).ok  # HIGH < CRITICAL
    high = ScanPolicy("no-high", ("*",), severity="HIGH", required=True)
    assert not (await _verdict(repo, digest, high)).ok


async def test_parsed_reports_are_remembered_by_blob_digest() -> None:
    repo = MemoryRepository()
    digest = repo.add_manifest(IMAGE, "v1")
    repo.add(report_artifact(TRIVY, trivy_report(("CVE-1", "LOW")), SUBJECT))
    memo = ReportMemo()
    await scan_reports(repo, digest, memo)
    repo.blobs.clear()  # a second look needs no blob read
    reports, notes = await scan_reports(repo, digest, memo)
    assert len(reports) == 1 and notes == []
