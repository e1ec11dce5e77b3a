"""Scan an image with a Trivy server and attach the report to it (``quayside scan push``).

:func:`scan_push` resolves the image at its registry, and for each image manifest (every
platform of an index):

1. reads the config (``rootfs.diff_ids``, architecture, OS) and downloads each layer into a
   temporary directory (streamed, resumable), reading what it installs
   (:mod:`regcore.layerpackages`);
2. sends the layers and the config to the Trivy server's cache, asks it to scan, and removes
   the layers from its cache again (:class:`regcore.trivyclient.TrivyServer`);
3. turns the answer into Trivy's JSON report and, unless ``dry_run``, pushes it as a referrer
   of the manifest: an artifact manifest (``artifactType``
   ``application/vnd.aquasec.trivy.report.v1+json``, empty config, the report as its one
   ``application/json`` layer, ``org.opencontainers.image.created``) whose ``subject`` is the
   manifest, exactly what the scan policies read.

For an index, the index itself also gets a report: the platforms' results together (targets
prefixed with the platform), so a policy judging the index sees every platform's findings.
Raises :class:`~regcore.trivyclient.TrivyUnreachable` / ``TrivyError`` and the registry's
errors; nothing is pushed for an image whose scan failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from regcore import manifest as mf
from regcore import mediatypes as mt
from regcore.client import RegistryClient
from regcore.layerpackages import LayerFacts, analyze_layer
from regcore.policy.reports import SEVERITIES, parse_report
from regcore.trivyclient import TrivyServer, trivy_json

__all__ = ["REPORT_ARTIFACT_TYPE", "ScanOutcome", "parse_image", "scan_push"]

REPORT_ARTIFACT_TYPE = "application/vnd.aquasec.trivy.report.v1+json"
_EMPTY = b"{}"
Advance = Callable[[str, int, int], None]  # (phase, amount, total)


@dataclass
class ScanOutcome:
    """One scanned manifest: its digest, what was found and where the report went."""

    digest: str
    platform: str = ""
    packages: int = 0
    severities: dict[str, int] = field(default_factory=dict)
    report_digest: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "platform": self.platform,
            "packages": self.packages,
            "findings": self.severities,
            "report": self.report_digest,
            "notes": self.notes,
        }


def parse_image(image: str, *, plain_http: bool = False) -> tuple[str, str, str]:
    """``[http(s)://]HOST[:PORT]/REPO[:TAG|@DIGEST]`` -> (base URL, repository, reference).
    Raises ValueError."""
    scheme = "http" if plain_http else "https"
    for prefix in ("http://", "https://"):
        if image.startswith(prefix):
            scheme, image = prefix[:-3], image[len(prefix) :]
    host, sep, rest = image.partition("/")
    if not sep or not rest:
        raise ValueError(f"{image!r}: expected HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]")
    if "@" in rest:
        repo, _, ref = rest.partition("@")
    else:
        last = rest.rsplit("/", 1)[-1]
        repo, ref = rest.rsplit(":", 1) if ":" in last else (rest, "latest")
    return f"{scheme}://{host}", repo, ref


def _key(kind: str, digest: str) -> str:
    return "sha256:" + hashlib.sha256(f"quayside-scan/1/{kind}/{digest}".encode()).hexdigest()


async def _download(
    client: RegistryClient, repo: str, digest: str, path: Path, advance: Advance, total: int
) -> None:
    with path.open("wb") as out:
        async with client.blob_stream(repo, digest, verify=True) as stream:
            async for chunk in stream:
                await asyncio.to_thread(out.write, chunk)
                advance("download layers", len(chunk), total)


async def _scan_one(
    client: RegistryClient,
    trivy: TrivyServer,
    repo: str,
    parsed: mf.ParsedManifest,
    name: str,
    workdir: Path,
    advance: Advance,
) -> tuple[bytes, ScanOutcome]:
    digest = str(parsed.digest)
    outcome = ScanOutcome(digest)
    assert parsed.config is not None
    config = json.loads(await client.get_blob(repo, str(parsed.config.digest)))
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    total = sum(layer.size for layer in parsed.layers)
    blob_ids: list[str] = []
    for i, layer in enumerate(parsed.layers):
        path = workdir / layer.digest.hex
        await _download(client, repo, str(layer.digest), path, advance, total)
        try:
            facts = await asyncio.to_thread(analyze_layer, path)
        except ValueError as exc:
            outcome.notes.append(f"layer {i}: {exc}")
            facts = LayerFacts()
        path.unlink(missing_ok=True)
        outcome.packages += facts.package_count
        blob_id = _key("blob", str(layer.digest))
        diff_id = diff_ids[i] if i < len(diff_ids) else str(layer.digest)
        await trivy.put_blob(blob_id, facts.blob_info(str(layer.digest), diff_id))
        blob_ids.append(blob_id)
    artifact_id = _key("artifact", str(parsed.config.digest))
    info = {
        "schema_version": 1,
        "architecture": config.get("architecture", ""),
        "os": config.get("os", ""),
    }
    await trivy.put_artifact(artifact_id, info)
    answer = await trivy.scan(f"{name}@{digest}", artifact_id, blob_ids)
    advance("scan", 1, 1)
    try:
        await trivy.delete_blobs(blob_ids)
    except Exception as exc:  # the server keeps a cache entry; not worth failing the scan
        outcome.notes.append(f"could not remove the layers from the server's cache: {exc}")
    metadata = {"ImageID": str(parsed.config.digest), "DiffIDs": diff_ids}
    return trivy_json(answer, name=name, repo_digest=f"{repo}@{digest}", metadata=metadata), outcome


def _count(report: bytes, outcome: ScanOutcome) -> None:
    counts = dict.fromkeys(SEVERITIES, 0)
    for finding in parse_report("trivy", report).findings:
        counts[finding.severity] += 1
    outcome.severities = {k: v for k, v in counts.items() if v}


async def _attach(client: RegistryClient, repo: str, report: bytes, subject: dict[str, Any]) -> str:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": REPORT_ARTIFACT_TYPE,
        "config": {
            "mediaType": mt.OCI_EMPTY,
            "digest": await client.push_blob(repo, _EMPTY),
            "size": 2,
        },
        "layers": [
            {
                "mediaType": "application/json",
                "digest": await client.push_blob(repo, report),
                "size": len(report),
            }
        ],
        "subject": subject,
        "annotations": {
            "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "org.opencontainers.image.description": "Trivy report (quayside scan push)",
        },
    }
    body = json.dumps(doc, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    return await client.push_manifest(repo, digest, body, mt.OCI_MANIFEST)


async def scan_push(
    client: RegistryClient,
    trivy: TrivyServer,
    repo: str,
    reference: str,
    *,
    name: str,
    dry_run: bool = False,
    advance: Advance | None = None,
) -> list[ScanOutcome]:
    """Scan ``repo:reference`` and attach the reports (see the module docstring)."""
    step = advance or (lambda _phase, _amount, _total: None)
    fetched = await client.get_manifest(repo, reference, mt.DEFAULT_ACCEPT)
    top = mf.parse_manifest(fetched.body, fetched.media_type)
    targets: list[tuple[mf.ParsedManifest, str]] = []
    if top.is_index:
        for child in top.children:
            if mt.is_index(child.media_type):
                continue
            got = await client.get_manifest(repo, str(child.digest), mt.DEFAULT_ACCEPT)
            platform = (
                "/".join(str(child.platform.get(k, "")) for k in ("os", "architecture"))
                if child.platform
                else ""
            )
            targets.append((mf.parse_manifest(got.body, got.media_type), platform))
    else:
        targets.append((top, ""))
    outcomes: list[ScanOutcome] = []
    combined: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="quayside-scan-") as tmp:
        for parsed, platform in targets:
            report, outcome = await _scan_one(client, trivy, repo, parsed, name, Path(tmp), step)
            outcome.platform = platform
            _count(report, outcome)
            for result in json.loads(report).get("Results", []):
                combined.append({**result, "Target": f"{platform}: {result.get('Target', '')}"})
            if not dry_run:
                subject = {
                    "mediaType": parsed.media_type,
                    "digest": str(parsed.digest),
                    "size": parsed.size,
                }
                outcome.report_digest = await _attach(client, repo, report, subject)
            outcomes.append(outcome)
    if top.is_index:
        doc = {
            "SchemaVersion": 2,
            "ArtifactName": name,
            "ArtifactType": "container_image",
            "Results": combined,
        }
        report = json.dumps(doc, indent=1).encode()
        outcome = ScanOutcome(
            str(top.digest), platform="index", packages=sum(o.packages for o in outcomes)
        )
        _count(report, outcome)
        if not dry_run:
            subject = {"mediaType": top.media_type, "digest": str(top.digest), "size": top.size}
            outcome.report_digest = await _attach(client, repo, report, subject)
        outcomes.append(outcome)
    return outcomes
