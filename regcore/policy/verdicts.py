"""Verdicts of policies on manifests, how they are reached, and how long they are reused.

:func:`verify_signatures` and :func:`judge_scan` turn what :mod:`regcore.policy.evidence`
found into a :class:`Verdict`. :func:`exemption` says when a manifest is not an image a
policy is about (a signature, an attestation, a report or any other artifact: they carry a
``subject`` or an ``artifactType``, a non-image config, or signature layers; an index whose
every entry is an artifact), so that signature and report artifacts stay pullable under
``enforce`` (cosign and CI read them through the same registry).

:class:`VerdictCache` keeps verdicts by ``(kind, policy, digest)``: reused for ``ttl`` seconds
(positive and negative alike, so new and removed signatures and reports show within it), kept
beyond that as the last known verdict until evicted (at most ``max_entries``, oldest first).
:class:`SignatureChecker` remembers each (key, message, signature) check, so the crypto work
for one signature is done once per process.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from regcore import mediatypes as mt
from regcore.policy import signatures as sg
from regcore.policy.evidence import FoundReport, newest_scan
from regcore.policy.keys import PublicKey
from regcore.policy.reports import severity_rank
from regcore.policyconfig import ScanPolicy, VerifyPolicy

__all__ = [
    "SignatureChecker",
    "Verdict",
    "VerdictCache",
    "children_of",
    "exemption",
    "judge_scan",
    "verify_signatures",
]

_IMAGE_CONFIGS = frozenset({mt.OCI_CONFIG, mt.DOCKER_CONFIG})
_ATTACHMENT_LAYERS = frozenset({sg.SIMPLE_SIGNING, sg.DSSE_ENVELOPE, sg.IN_TOTO, *sg.BUNDLE_TYPES})


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a policy lets a manifest through, and why (a phrase for messages and logs)."""

    ok: bool
    reason: str


def _doc(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def exemption(body: bytes) -> str | None:
    """Why the manifest ``body`` is not an image a policy judges, or ``None`` (it is)."""
    doc = _doc(body)
    if doc is None:
        return None
    if isinstance(doc.get("subject"), dict):
        return "a referrer (it has a subject)"
    if isinstance(doc.get("artifactType"), str) and doc["artifactType"]:
        return "an artifact (it has an artifactType)"
    children = doc.get("manifests")
    if isinstance(children, list):
        every = all(isinstance(c, dict) and c.get("artifactType") for c in children)
        return "an index of artifacts" if children and every else None
    config = doc.get("config")
    kind = config.get("mediaType") if isinstance(config, dict) else None
    if isinstance(kind, str) and kind not in _IMAGE_CONFIGS:
        return f"an artifact (config type {kind[:60]})"
    layers = doc.get("layers")
    for layer in layers if isinstance(layers, list) else ():
        if isinstance(layer, dict) and layer.get("mediaType") in _ATTACHMENT_LAYERS:
            return "a signature or attestation"
    return None


def children_of(body: bytes) -> list[str]:
    """The digests an index lists (empty for anything else)."""
    doc = _doc(body)
    children = doc.get("manifests") if doc is not None else None
    if not isinstance(children, list):
        return []
    return [
        c["digest"] for c in children if isinstance(c, dict) and isinstance(c.get("digest"), str)
    ]


class SignatureChecker:
    """``key.verify`` with each answer remembered (at most ``max_entries``)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[str, bytes, bytes], bool] = OrderedDict()
        self.checks = 0
        """Signature checks actually computed (not answered from memory)."""

    def check(self, key: PublicKey, signature: bytes, message: bytes) -> bool:
        memo = (key.key_id, hashlib.sha256(message).digest(), signature)
        known = self._seen.get(memo)
        if known is not None:
            self._seen.move_to_end(memo)
            return known
        self.checks += 1
        ok = key.verify(signature, message)
        self._seen[memo] = ok
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return ok


def verify_signatures(
    policy: VerifyPolicy,
    messages: Sequence[sg.SignedMessage],
    notes: Sequence[str],
    checker: SignatureChecker,
) -> Verdict:
    """Signed by one of the policy's keys, or why not."""
    count = 0
    for message in messages:
        for signature in message.signatures:
            count += 1
            for key in policy.keys:
                if checker.check(key, signature, message.message):
                    return Verdict(True, f"signed by {key.source} ({key.kind}, {message.origin})")
    if count == 0:
        hint = f" ({notes[0]})" if notes else ""
        return Verdict(False, f"no signature found{hint}")
    plural = "s" if count != 1 else ""
    return Verdict(False, f"not signed by a trusted key ({count} signature{plural} checked)")


def judge_scan(policy: ScanPolicy, reports: Sequence[FoundReport], notes: Sequence[str]) -> Verdict:
    """The newest scan report lists nothing at or above the policy's severity (allow-listed
    and VEX-suppressed ids aside), or no report exists and none is required."""
    newest = newest_scan(reports)
    if newest is None:
        if policy.required:
            hint = f" ({notes[0]})" if notes else ""
            return Verdict(False, f"no scan report, and one is required{hint}")
        return Verdict(True, "no scan report (not required)")
    ignored = set(policy.allow)
    for found in reports:
        ignored |= found.report.suppressed
    threshold = severity_rank(policy.severity)
    blocking = sorted(
        {
            f.id
            for f in newest.report.findings
            if severity_rank(f.severity) >= threshold and f.id not in ignored
        }
    )
    where = f"{newest.report.format} report {newest.digest[:19]}…"
    if blocking:
        shown = ", ".join(blocking[:5]) + (
            f" and {len(blocking) - 5} more" if len(blocking) > 5 else ""
        )
        return Verdict(
            False,
            f"{where} lists {len(blocking)} finding(s) at or above {policy.severity}: {shown}",
        )
    return Verdict(True, f"{where} lists nothing at or above {policy.severity}")


class VerdictCache:
    """Verdicts by key with the time they were reached (see the module docstring)."""

    def __init__(self, *, ttl: float, max_entries: int = 10000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[str, ...], tuple[Verdict, float]] = OrderedDict()

    def get(self, key: tuple[str, ...], now: float) -> tuple[Verdict, bool] | None:
        """``(verdict, fresh)`` or ``None``; ``fresh`` is whether it may be reused now."""
        item = self._items.get(key)
        if item is None:
            return None
        verdict, at = item
        return verdict, now - at < self.ttl

    def put(self, key: tuple[str, ...], verdict: Verdict, now: float) -> None:
        self._items[key] = (verdict, now)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
