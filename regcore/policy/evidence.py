"""Finding signatures and scan reports of one manifest through an :class:`ArtifactSource`.

A server gives the policy code read access to one repository as an :class:`ArtifactSource`
(the origin reads its own store; the edge reads its caches and, on a miss, its upstream).
:func:`signature_messages` looks where the tools put signatures, in this order:

1. cosign's tag ``sha256-<hex>.sig`` (cosign, containers/image sigstore attachments);
2. the referrers of the digest (cosign OCI 1.1 signatures, Sigstore bundles, notation), or,
   when the registry has no referrers API, the referrers tag schema's index ``sha256-<hex>``.

:func:`scan_reports` lists the reports among the referrers, newest first (by the descriptor's
``org.opencontainers.image.created`` or ``org.opencontainers.artifact.created`` annotation,
then by digest). Work is bounded: at most :data:`MAX_REFERRERS` referrers are opened, payloads
are read up to :data:`~regcore.policy.signatures.MAX_PAYLOAD_BYTES`, bundles up to 1 MiB and
reports up to :data:`MAX_REPORT_BYTES`. Parsed reports are remembered by blob digest in a
:class:`ReportMemo` (content-addressed, so never stale). Errors of the source (an upstream
that is down) propagate to the caller.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from regcore.policy import signatures as sg
from regcore.policy.reports import Report, parse_report, report_format

__all__ = [
    "MAX_REFERRERS",
    "MAX_REPORT_BYTES",
    "ArtifactSource",
    "FetchedManifest",
    "FoundReport",
    "ReportMemo",
    "newest_scan",
    "scan_reports",
    "signature_messages",
]

MAX_REFERRERS = 32
MAX_BUNDLE_BYTES = 1024 * 1024
MAX_REPORT_BYTES = 32 * 1024 * 1024
_CREATED = ("org.opencontainers.image.created", "org.opencontainers.artifact.created")
_SIGNATURE_TYPES = frozenset({sg.COSIGN_SIGNATURE_ARTIFACT, sg.SIMPLE_SIGNING})


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    """Manifest bytes verified against ``digest``, with their media type."""

    body: bytes
    media_type: str
    digest: str


class ArtifactSource(Protocol):
    """Read access to one repository for the policy code."""

    async def manifest(self, reference: str) -> FetchedManifest | None:
        """The manifest a tag or digest names, or ``None`` when there is none."""
        ...

    async def blob(self, digest: str, max_bytes: int) -> bytes | None:
        """A blob's bytes (verified against ``digest``), or ``None`` when the repository has
        no such blob or it is larger than ``max_bytes``."""
        ...

    async def referrers(self, digest: str) -> list[dict[str, Any]] | None:
        """The referrers' descriptors of ``digest`` (unfiltered), or ``None`` when the
        registry has no referrers API."""
        ...


@dataclass(frozen=True, slots=True)
class FoundReport:
    """A parsed report attached to an image: the referrer's digest and creation time."""

    digest: str
    created: str
    report: Report


class ReportMemo:
    """Parsed reports by blob digest, least recently used out beyond ``max_entries``."""

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, Report | str] = OrderedDict()

    def get(self, digest: str) -> Report | str | None:
        item = self._items.get(digest)
        if item is not None:
            self._items.move_to_end(digest)
        return item

    def put(self, digest: str, value: Report | str) -> None:
        self._items[digest] = value
        self._items.move_to_end(digest)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


async def _referrers(source: ArtifactSource, digest: str) -> list[dict[str, Any]]:
    found = await source.referrers(digest)
    if found is None:  # no referrers API: the tag schema's index, if anyone wrote one
        index = await source.manifest(digest.replace(":", "-", 1))
        doc = _json(index.body) if index is not None else None
        found = doc.get("manifests") if isinstance(doc, dict) else None
    return [d for d in found or () if isinstance(d, dict) and isinstance(d.get("digest"), str)]


async def _cosign(
    source: ArtifactSource, body: bytes, digest: str, origin: str, notes: list[str]
) -> list[sg.SignedMessage]:
    out: list[sg.SignedMessage] = []
    for i, (payload_digest, _size, sig) in enumerate(sg.simple_signing_layers(_json(body))):
        payload = await source.blob(payload_digest, sg.MAX_PAYLOAD_BYTES)
        if payload is None:
            notes.append(f"{origin}: payload {payload_digest[:19]}… missing")
            continue
        why = sg.check_payload(payload, digest)
        if why is not None:
            notes.append(f"{origin} layer {i}: {why}")
            continue
        out.append(sg.SignedMessage(payload, (sig,), f"{origin} layer {i}"))
    return out


async def _first_layer(
    source: ArtifactSource, body: bytes, max_bytes: int
) -> tuple[str, bytes] | None:
    doc = _json(body)
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list) or not layers or not isinstance(layers[0], dict):
        return None
    digest = layers[0].get("digest")
    if not isinstance(digest, str):
        return None
    data = await source.blob(digest, max_bytes)
    return (digest, data) if data is not None else None


async def signature_messages(
    source: ArtifactSource, digest: str, manifest: bytes
) -> tuple[list[sg.SignedMessage], list[str]]:
    """Every signed message about ``digest`` (see the module docstring) and notes on what was
    found but does not count (wrong digest in a payload, notation, unreadable bundle)."""
    notes: list[str] = []
    messages: list[sg.SignedMessage] = []
    tag = sg.signature_tag(digest)
    found = await source.manifest(tag)
    if found is not None:
        messages += await _cosign(source, found.body, digest, f"tag {tag}", notes)
    for desc in (await _referrers(source, digest))[:MAX_REFERRERS]:
        kind = desc.get("artifactType")
        origin = f"referrer {desc['digest'][:19]}…"
        if kind == sg.NOTATION_SIGNATURE:
            notes.append(f"{origin}: notation signature (not verifiable here)")
            continue
        if kind not in _SIGNATURE_TYPES and kind not in sg.BUNDLE_TYPES:
            continue
        ref = await source.manifest(desc["digest"])
        if ref is None:
            continue
        if kind in _SIGNATURE_TYPES:
            messages += await _cosign(source, ref.body, digest, origin, notes)
            continue
        layer = await _first_layer(source, ref.body, MAX_BUNDLE_BYTES)
        if layer is None:
            notes.append(f"{origin}: bundle blob missing")
            continue
        message, why = sg.bundle_message(layer[1], digest, manifest, origin)
        if message is None:
            notes.append(f"{origin}: {why}")
        else:
            messages.append(message)
    return messages, notes


def _created(desc: dict[str, Any]) -> str:
    annotations = desc.get("annotations")
    if not isinstance(annotations, dict):
        return ""
    for key in _CREATED:
        value = annotations.get(key)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat()
            except ValueError:
                continue
    return ""


async def scan_reports(
    source: ArtifactSource, digest: str, memo: ReportMemo
) -> tuple[list[FoundReport], list[str]]:
    """The readable reports attached to ``digest``, newest first, and notes on unreadable
    ones."""
    notes: list[str] = []
    candidates = [
        d for d in await _referrers(source, digest) if report_format(d.get("artifactType"))
    ]
    candidates.sort(key=lambda d: (_created(d), d["digest"]), reverse=True)
    found: list[FoundReport] = []
    for desc in candidates[:MAX_REFERRERS]:
        fmt = report_format(desc.get("artifactType"))
        assert fmt is not None
        ref = await source.manifest(desc["digest"])
        if ref is None:
            continue
        report = await _report(source, ref.body, fmt, memo)
        if isinstance(report, str):
            notes.append(f"report {desc['digest'][:19]}…: {report}")
        else:
            found.append(FoundReport(desc["digest"], _created(desc), report))
    return found, notes


async def _report(source: ArtifactSource, body: bytes, fmt: str, memo: ReportMemo) -> Report | str:
    doc = _json(body)
    layers = doc.get("layers") if isinstance(doc, dict) else None
    first = layers[0] if isinstance(layers, list) and layers else None
    digest = first.get("digest") if isinstance(first, dict) else None
    if not isinstance(digest, str):
        return "no report layer"
    known = memo.get(digest)
    if known is not None:
        return known
    data = await source.blob(digest, MAX_REPORT_BYTES)
    if data is None:
        return "report blob missing or too large"
    try:
        value: Report | str = parse_report(fmt, data)
    except ValueError as exc:
        value = str(exc)
    memo.put(digest, value)
    return value


def newest_scan(reports: Sequence[FoundReport]) -> FoundReport | None:
    """The newest report that is a scan (not an SBOM or a pure VEX)."""
    return next((r for r in reports if r.report.scanned), None)
