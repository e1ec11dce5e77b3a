"""Signature verdicts and scan summaries as the UI shows them, behind a small interface.

The origin's signature and scan policies (``regcore/policy``) answer through a
:class:`TrustSource`: two coroutines taking a repository and a manifest digest. When none is
wired the UI shows "not configured"; a source that raises shows "error" (logged with its
traceback; nothing from the exception reaches the page).

:func:`classify` names what an attached artifact is from its artifact type (or config media
type, or the cosign tag suffix): cosign / notation / sigstore signatures, scan reports
(SARIF, Trivy, CycloneDX), SBOMs, attestations. The UI lists what it finds whether or not a
policy judges it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol

__all__ = [
    "ERROR_SCAN",
    "ERROR_VERDICT",
    "NOT_CONFIGURED_SCAN",
    "NOT_CONFIGURED_VERDICT",
    "ScanSummary",
    "TrustSource",
    "Verdict",
    "classify",
    "scan_of",
    "verdict_of",
]

log = logging.getLogger("quayside.origin.ui")

VerdictState = Literal["verified", "failed", "unsigned", "not configured", "error"]
ScanState = Literal["pass", "blocked", "warn", "no report", "not configured", "error"]
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The signature policy's answer for one manifest.

    ``state``: ``verified`` (signed by a key the policy accepts), ``failed`` (signatures
    present, none verifies), ``unsigned``, ``not configured`` (no policy applies, or no policy
    engine), ``error``. ``policy``: the policy's name; ``mode``: ``enforce``/``warn``/``off``;
    ``signers``: the keys (names or fingerprints) that verified; ``detail``: one sentence.
    """

    state: VerdictState
    policy: str | None = None
    mode: str | None = None
    signers: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ScanSummary:
    """The scan policy's answer for one manifest.

    ``state``: ``pass``, ``blocked`` (findings at or above the policy's severity), ``warn``,
    ``no report``, ``not configured``, ``error``. ``counts``: findings per severity (allow-listed
    ones excluded); ``report``: digest of the newest report and its ``format`` and ``created``
    time (ISO 8601) when one exists.
    """

    state: ScanState
    policy: str | None = None
    mode: str | None = None
    counts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    report: str | None = None
    format: str | None = None
    created: str | None = None
    detail: str = ""

    def ordered_counts(self) -> list[tuple[str, int]]:
        known = [(s, int(self.counts.get(s, 0))) for s in SEVERITIES if s in self.counts]
        rest = [(s, int(n)) for s, n in self.counts.items() if s not in SEVERITIES]
        return known + sorted(rest)


class TrustSource(Protocol):
    """What the UI asks the signature and scan policies."""

    async def signature_verdict(self, repository: str, digest: str) -> Verdict: ...

    async def scan_summary(self, repository: str, digest: str) -> ScanSummary: ...


NOT_CONFIGURED_VERDICT = Verdict("not configured", detail="no signature policy is configured")
NOT_CONFIGURED_SCAN = ScanSummary("not configured", detail="no scan policy is configured")
ERROR_VERDICT = Verdict("error", detail="the signature policy could not be evaluated")
ERROR_SCAN = ScanSummary("error", detail="the scan policy could not be evaluated")


async def verdict_of(source: TrustSource | None, repository: str, digest: str) -> Verdict:
    """The source's verdict, "not configured" without one, "error" if it raises."""
    if source is None:
        return NOT_CONFIGURED_VERDICT
    try:
        return await source.signature_verdict(repository, digest)
    except Exception:
        log.exception("signature verdict failed", extra={"repository": repository})
        return ERROR_VERDICT


async def scan_of(source: TrustSource | None, repository: str, digest: str) -> ScanSummary:
    """The source's scan summary, "not configured" without one, "error" if it raises."""
    if source is None:
        return NOT_CONFIGURED_SCAN
    try:
        return await source.scan_summary(repository, digest)
    except Exception:
        log.exception("scan summary failed", extra={"repository": repository})
        return ERROR_SCAN


# -- what an attached artifact is ----------------------------------------------------------------
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIG_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
NOTATION_SIGNATURE = "application/vnd.cncf.notary.signature"
_SIGNATURE_TYPES = {
    COSIGN_SIMPLESIGNING: "cosign signature",
    COSIGN_SIG_ARTIFACT: "cosign signature",
    NOTATION_SIGNATURE: "notation signature",
}


def classify(artifact_type: str | None, layer_types: tuple[str, ...] = ()) -> tuple[str, str]:
    """``(group, label)`` of an artifact: group ``signature``, ``report``, ``sbom``,
    ``attestation`` or ``other``; label a short human name."""
    t = (artifact_type or "").lower()
    for candidate in (t, *(lt.lower() for lt in layer_types)):
        if candidate in _SIGNATURE_TYPES:
            return "signature", _SIGNATURE_TYPES[candidate]
    if "sigstore.bundle" in t:
        return "signature", "sigstore bundle"
    if "sarif" in t:
        return "report", "scan report (SARIF)"
    if "trivy" in t:
        return "report", "scan report (Trivy)"
    if "vex" in t or "openvex" in t:
        return "report", "VEX document"
    if "cyclonedx" in t:
        return "sbom", "SBOM (CycloneDX)"
    if "spdx" in t:
        return "sbom", "SBOM (SPDX)"
    if "in-toto" in t or "dsse" in t or any("dsse" in lt for lt in layer_types):
        return "attestation", "attestation"
    return "other", artifact_type or "artifact"
