"""A manifest as the UI's tag page shows it: platforms, layers, attached artifacts.

:func:`load_manifest_view` reads one manifest of a repository from the blob store (it must be
a revision of that repository: a digest the repository does not link is "not found", as the
API answers) and gathers:

* for an index, its children with their platforms (and whether the repository holds each);
* for an image, its config (os, architecture, creation time when the config says) and its
  layers with sizes (and whether each blob is stored);
* what is attached to it: OCI 1.1 referrers of this repository, and cosign's tag scheme
  (``sha256-<hex>.sig``, ``.att``, ``.sbom``), each classified by :func:`origin.ui.trust.
  classify` (signatures, scan reports, SBOMs, attestations, other);
* if it is itself attached to another manifest (``subject``), that digest.

Raises :class:`LookupError` when the manifest is not a revision of the repository or cannot be
read or parsed. Bounded: at most :data:`MAX_ARTIFACTS` attached artifacts are read, each at most
``max_bytes``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from origin.repository import Repositories
from origin.ui.trust import classify
from regcore import errors
from regcore.digest import Digest
from regcore.manifest import ParsedManifest, parse_manifest
from regcore.storage.interfaces import BlobReader

__all__ = ["MAX_ARTIFACTS", "Artifact", "BlobRow", "ManifestView", "load_manifest_view"]

MAX_ARTIFACTS = 50
_CONFIG_LIMIT = 1 << 20
_COSIGN_SUFFIXES = (".sig", ".att", ".sbom")


@dataclass(frozen=True, slots=True)
class BlobRow:
    digest: str
    media_type: str
    size: int
    stored: bool
    platform: str = ""


@dataclass(frozen=True, slots=True)
class Artifact:
    digest: str
    group: str  # signature, report, sbom, attestation, other
    label: str
    artifact_type: str
    via: str  # "referrers API" or "tag <name>"
    created: str | None = None
    entries: int = 1  # signatures in a cosign .sig manifest (one per layer)


@dataclass
class ManifestView:
    repository: str
    digest: str
    media_type: str
    size: int
    tags: list[str]
    is_index: bool
    artifact_type: str | None = None
    subject: str | None = None
    children: list[BlobRow] = field(default_factory=list)
    config: BlobRow | None = None
    layers: list[BlobRow] = field(default_factory=list)
    image: dict[str, str] = field(default_factory=dict)  # os, architecture, variant, created
    artifacts: list[Artifact] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def total_size(self) -> int:
        """Manifest plus config and layers (image) or plus children manifests (index)."""
        parts = self.layers + ([self.config] if self.config else []) + self.children
        return self.size + sum(b.size for b in parts)

    def group(self, name: str) -> list[Artifact]:
        return [a for a in self.artifacts if a.group == name]


def platform_text(platform: dict[str, Any] | None) -> str:
    if not platform:
        return "unknown platform"
    parts = [str(platform.get("os", "?")), str(platform.get("architecture", "?"))]
    if platform.get("variant"):
        parts.append(str(platform["variant"]))
    return "/".join(parts)


async def _read(store: BlobReader, digest: Digest, limit: int) -> bytes | None:
    try:
        return await store.read_bytes(digest, limit=limit)
    except errors.RegistryError:
        return None


async def _stored(store: Any, digest: Digest) -> bool:
    stat = getattr(store, "stat", None)
    if stat is None:
        return True
    try:
        return await stat(digest) is not None
    except errors.RegistryError:
        return False


async def load_manifest_view(
    repos: Repositories,
    store: BlobReader,
    name: str,
    digest: Digest,
    *,
    max_bytes: int,
    persist: bool = True,
) -> ManifestView:
    """See the module docstring. ``persist`` False (read-only origin) keeps the referrers
    lookup from writing its index. Raises LookupError."""
    if not await repos.revision_exists(name, digest):
        raise LookupError(f"{name}@{digest}")
    raw = await _read(store, digest, max_bytes)
    if raw is None:
        raise LookupError(f"{name}@{digest}: manifest unreadable")
    try:
        parsed = parse_manifest(raw, None, digest_algorithm=digest.algorithm, max_bytes=max_bytes)
    except errors.RegistryError:
        raise LookupError(f"{name}@{digest}: manifest invalid") from None
    view = ManifestView(
        repository=name,
        digest=str(digest),
        media_type=parsed.media_type,
        size=len(raw),
        tags=await repos.tags_for(name, digest),
        is_index=parsed.is_index,
        artifact_type=parsed.artifact_type if parsed.subject is not None else None,
        subject=str(parsed.subject.digest) if parsed.subject is not None else None,
        annotations=dict(parsed.annotations),
    )
    if parsed.is_index:
        for child in parsed.children:
            held = await repos.revision_exists(name, child.digest)
            view.children.append(
                BlobRow(
                    str(child.digest),
                    child.media_type,
                    child.size,
                    held,
                    platform_text(child.platform) if child.platform else _artifact_label(child),
                )
            )
    else:
        await _image_parts(view, parsed, store)
    view.artifacts = await _artifacts(repos, store, name, digest, max_bytes, persist)
    return view


def _artifact_label(child: Any) -> str:
    if child.artifact_type:
        return classify(child.artifact_type)[1]
    return "unknown platform"


async def _image_parts(view: ManifestView, parsed: ParsedManifest, store: BlobReader) -> None:
    config = parsed.config
    if config is not None:
        view.config = BlobRow(
            str(config.digest), config.media_type, config.size, await _stored(store, config.digest)
        )
        body = await _read(store, config.digest, _CONFIG_LIMIT)
        view.image = _image_facts(body)
    for layer in parsed.layers:
        stored = True if layer.is_foreign else await _stored(store, layer.digest)
        view.layers.append(BlobRow(str(layer.digest), layer.media_type, layer.size, stored))


def _image_facts(body: bytes | None) -> dict[str, str]:
    if not body:
        return {}
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(doc, dict):
        return {}
    out = {}
    for key in ("os", "architecture", "variant", "created"):
        value = doc.get(key)
        if isinstance(value, str) and value:
            out[key] = value[:100]
    return out


async def _artifacts(
    repos: Repositories,
    store: BlobReader,
    name: str,
    digest: Digest,
    max_bytes: int,
    persist: bool,
) -> list[Artifact]:
    found: list[tuple[Digest, str]] = [
        (d, "referrers API") for d in await repos.list_referrers(name, digest, persist=persist)
    ]
    seen = {d for d, _ in found}
    for suffix in _COSIGN_SUFFIXES:
        tag = f"{digest.algorithm}-{digest.hex}{suffix}"
        try:
            target = await repos.resolve_tag(name, tag)
        except errors.RegistryError:
            continue
        if target not in seen:
            found.append((target, f"tag {tag}"))
            seen.add(target)
    out = []
    for art_digest, via in found[:MAX_ARTIFACTS]:
        raw = await _read(store, art_digest, max_bytes)
        parsed = None
        if raw is not None:
            try:
                parsed = parse_manifest(raw, None, max_bytes=max_bytes)
            except errors.RegistryError:
                parsed = None
        if parsed is None:
            out.append(Artifact(str(art_digest), "other", "unreadable manifest", "", via))
            continue
        layer_types = tuple(layer.media_type for layer in parsed.layers)
        atype = parsed.artifact_type or ""
        group, label = classify(atype, layer_types)
        if via.endswith(".att") and group == "other":
            group, label = "attestation", "attestation"
        if via.endswith(".sbom") and group == "other":
            group, label = "sbom", "SBOM"
        entries = len(parsed.layers) if group == "signature" and via.startswith("tag ") else 1
        created = parsed.annotations.get("org.opencontainers.image.created")
        out.append(Artifact(str(art_digest), group, label, atype, via, created, max(entries, 1)))
    return out
