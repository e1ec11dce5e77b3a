"""Vulnerability reports attached to images, parsed into findings.

CI attaches a report to an image as a referrer: an artifact manifest whose ``subject`` is the
image and whose first layer blob is the report. Recognized artifact types
(:data:`REPORT_TYPES`; parameters after ``;`` are ignored), as the tools write them:

- Trivy JSON (``trivy image -f json``): ``application/vnd.aquasec.trivy.report.v1+json``
  (``oras attach --artifact-type``), and ``application/json``, trivy-plugin-referrer's type
  for ``-f cosign-vuln`` (a predicate whose ``scanner.result`` is the Trivy JSON; an in-toto
  statement wrapping it is unwrapped too). Findings: ``Results[].Vulnerabilities[]``
  (``VulnerabilityID``, ``Severity``, ``PkgName``).
- SARIF 2.1 (``trivy image -f sarif``): ``application/sarif+json``. Findings:
  ``runs[].results[]``; the severity is the rule's tag (Trivy tags rules ``CRITICAL``...),
  else its ``security-severity`` score (CVSS bands), else the result's ``level``.
- CycloneDX (``trivy image -f cyclonedx --scanners vuln``, and CycloneDX VEX documents):
  ``application/vnd.cyclonedx+json``. Findings: ``vulnerabilities[]`` with ``ratings``;
  an entry whose ``analysis.state`` is ``not_affected``, ``false_positive``, ``resolved`` or
  ``resolved_with_pedigree`` suppresses that id (VEX) instead.

:func:`parse_report` raises ValueError for a body it cannot read as the format its artifact
type names. A report whose document carries no scan (an SBOM, a pure VEX) has
``scanned=False``: it can suppress findings but is not "a report" for ``required``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REPORT_TYPES",
    "SEVERITIES",
    "Finding",
    "Report",
    "parse_report",
    "report_format",
    "severity_rank",
]

SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
REPORT_TYPES = {
    "application/vnd.aquasec.trivy.report.v1+json": "trivy",
    "application/vnd.aquasec.trivy.report+json": "trivy",
    "application/json": "trivy",
    "application/sarif+json": "sarif",
    "application/vnd.cyclonedx+json": "cyclonedx",
}
_SUPPRESSING_STATES = frozenset(
    {"not_affected", "false_positive", "resolved", "resolved_with_pedigree"}
)
_CDX_SEVERITY = {
    "critical": "CRITICAL",
    "high": "HIGH",
    "medium": "MEDIUM",
    "low": "LOW",
    "info": "LOW",
    "none": "UNKNOWN",
    "unknown": "UNKNOWN",
}
_SARIF_LEVEL = {"error": "HIGH", "warning": "MEDIUM", "note": "LOW", "none": "UNKNOWN"}


def severity_rank(severity: str) -> int:
    """0 (UNKNOWN) .. 4 (CRITICAL); anything unrecognized ranks as UNKNOWN."""
    upper = severity.upper()
    return SEVERITIES.index(upper) if upper in SEVERITIES else 0


@dataclass(frozen=True, slots=True)
class Finding:
    """One vulnerability: its id (``CVE-…``, ``GHSA-…``), severity (one of
    :data:`SEVERITIES`) and the package it was found in (may be empty)."""

    id: str
    severity: str
    package: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    """What one report says: its ``format``, the ``findings``, the ids it marks as not
    applicable (``suppressed``), and whether it is a scan at all (``scanned``)."""

    format: str
    findings: tuple[Finding, ...]
    suppressed: frozenset[str] = frozenset()
    scanned: bool = True


def report_format(artifact_type: str | None) -> str | None:
    """The report format an artifact type names (``trivy``/``sarif``/``cyclonedx``) or None."""
    if not artifact_type:
        return None
    return REPORT_TYPES.get(artifact_type.split(";", 1)[0].strip().lower())


def parse_report(fmt: str, body: bytes) -> Report:
    """Parse ``body`` as a ``fmt`` report (see the module docstring). Raises ValueError."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{fmt} report is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{fmt} report is not a JSON object")
    if fmt == "trivy":
        return _trivy(doc)
    if fmt == "sarif":
        return _sarif(doc)
    if fmt == "cyclonedx":
        return _cyclonedx(doc)
    raise ValueError(f"unknown report format {fmt!r}")


def _severity(value: Any) -> str:
    s = str(value or "").upper()
    return s if s in SEVERITIES else "UNKNOWN"


def _trivy(doc: dict[str, Any]) -> Report:
    for wrapper in ("predicate", "scanner", "result"):  # in-toto / cosign-vuln wrappers
        inner = doc.get(wrapper)
        if isinstance(inner, dict) and "Results" not in doc:
            return _trivy(inner)
    results = doc.get("Results")
    if results is None and "SchemaVersion" in doc:
        return Report("trivy", ())  # a clean scan: Trivy omits Results when nothing is found
    if not isinstance(results, list):
        raise ValueError("trivy report has no Results list")
    findings: list[Finding] = []
    for result in results:
        vulns = result.get("Vulnerabilities") if isinstance(result, dict) else None
        for v in vulns if isinstance(vulns, list) else ():
            if isinstance(v, dict) and isinstance(v.get("VulnerabilityID"), str):
                findings.append(
                    Finding(
                        v["VulnerabilityID"],
                        _severity(v.get("Severity")),
                        str(v.get("PkgName") or ""),
                    )
                )
    return Report("trivy", tuple(findings))


def _score_band(score: Any) -> str | None:
    try:
        value = float(score)
    except (TypeError, ValueError):
        return None
    if value >= 9.0:
        return "CRITICAL"
    if value >= 7.0:
        return "HIGH"
    if value >= 4.0:
        return "MEDIUM"
    return "LOW" if value > 0 else "UNKNOWN"


def _rule_severity(rule: Any) -> str | None:
    props = rule.get("properties") if isinstance(rule, dict) else None
    if not isinstance(props, dict):
        return None
    tags = props.get("tags")
    for tag in tags if isinstance(tags, list) else ():
        if isinstance(tag, str) and tag.upper() in SEVERITIES and tag.upper() != "UNKNOWN":
            return tag.upper()
    return _score_band(props.get("security-severity"))


def _sarif(doc: dict[str, Any]) -> Report:
    runs = doc.get("runs")
    if not isinstance(runs, list):
        raise ValueError("sarif report has no runs list")
    findings: list[Finding] = []
    for run in runs:
        if not isinstance(run, dict):
            continue
        driver = (
            (run.get("tool") or {}).get("driver") if isinstance(run.get("tool"), dict) else None
        )
        rules = driver.get("rules") if isinstance(driver, dict) else None
        by_id = (
            {r.get("id"): r for r in rules if isinstance(r, dict)}
            if isinstance(rules, list)
            else {}
        )
        results = run.get("results")
        for res in results if isinstance(results, list) else ():
            if not isinstance(res, dict) or not isinstance(res.get("ruleId"), str):
                continue
            rule = by_id.get(res["ruleId"])
            index = res.get("ruleIndex")
            if (
                rule is None
                and isinstance(index, int)
                and isinstance(rules, list)
                and 0 <= index < len(rules)
            ):
                rule = rules[index]
            severity = _rule_severity(rule) or _SARIF_LEVEL.get(
                str(res.get("level", "warning")), "UNKNOWN"
            )
            findings.append(Finding(res["ruleId"], severity))
    return Report("sarif", tuple(findings))


def _cyclonedx(doc: dict[str, Any]) -> Report:
    vulns = doc.get("vulnerabilities")
    if vulns is None:
        if doc.get("bomFormat") != "CycloneDX":
            raise ValueError("not a CycloneDX document")
        return Report("cyclonedx", (), scanned=False)  # an SBOM without vulnerabilities
    if not isinstance(vulns, list):
        raise ValueError("CycloneDX vulnerabilities is not a list")
    findings: list[Finding] = []
    suppressed: set[str] = set()
    rated = not vulns
    for v in vulns:
        if not isinstance(v, dict) or not isinstance(v.get("id"), str):
            continue
        analysis = v.get("analysis")
        state = analysis.get("state") if isinstance(analysis, dict) else None
        if state in _SUPPRESSING_STATES:
            suppressed.add(v["id"])
            continue
        ratings = v.get("ratings")
        if not isinstance(ratings, list) or not ratings:
            continue  # a VEX statement about an id, not a finding
        rated = True
        ranks = [
            _CDX_SEVERITY.get(str(r.get("severity", "")).lower(), "UNKNOWN")
            for r in ratings
            if isinstance(r, dict)
        ]
        worst = max(ranks or ["UNKNOWN"], key=severity_rank)
        findings.append(Finding(v["id"], worst))
    return Report("cyclonedx", tuple(findings), frozenset(suppressed), scanned=rated)
