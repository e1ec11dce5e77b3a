"""Read a whole storage root as registry:2 laid it out: what garbage collection, retention,
quotas and the inventory look at.

Everything here is blocking (directory walks, small reads): call it through
``asyncio.to_thread``. Nothing here writes. Readers tolerate a root that changes under them
(a push or delete in progress): a link or blob that vanishes mid-walk is skipped, never an
error. Times are file times in wall-clock seconds: a link's ``mtime`` is when it was last
written (links are replaced atomically on every write, so a tag's ``current/link`` mtime is
its push time), a blob's commit time is its ``mtime`` (the last write of the bytes, just
before they were verified and renamed into place).

Manifest references (:func:`manifest_refs`) are read leniently, without media-type checks, so
anything registry:2 or Quayside stored is understood: ``config``/``layers`` (schema 2, OCI),
``manifests`` (indexes and lists), ``blobs`` (old OCI artifacts), ``fsLayers`` (schema 1) and
``subject``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from origin.uploadtimes import started_at
from regcore import errors
from regcore.digest import Digest
from regcore.storage.layout import Layout

MANIFEST_READ_LIMIT = 16 * 1024 * 1024

__all__ = [
    "ManifestRefs",
    "RefReader",
    "RepoScan",
    "iter_blobs",
    "list_repositories",
    "manifest_refs",
    "scan_repository",
]


@dataclass(frozen=True)
class ManifestRefs:
    """What one stored manifest points at. ``size`` is its own byte count."""

    size: int
    blobs: tuple[Digest, ...] = ()
    children: tuple[Digest, ...] = ()
    subject: Digest | None = None
    media_type: str = ""


@dataclass
class RepoScan:
    """One repository as found on disk (digest/tag -> link mtime)."""

    name: str
    revisions: dict[Digest, float] = field(default_factory=dict)
    tags: dict[str, tuple[Digest, float]] = field(default_factory=dict)
    layers: dict[Digest, float] = field(default_factory=dict)
    uploads: list[float] = field(default_factory=list)  # started-at of sessions in progress

    def tagged(self) -> dict[Digest, list[str]]:
        out: dict[Digest, list[str]] = {}
        for tag, (digest, _) in sorted(self.tags.items()):
            out.setdefault(digest, []).append(tag)
        return out


def _names(path: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(path) if not n.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _link(path: Path) -> tuple[Digest, float] | None:
    """The digest in a link file and its mtime; None when absent or unreadable."""
    try:
        with open(path) as f:
            text = f.read(512).strip()
            mtime = os.fstat(f.fileno()).st_mtime
        return Digest.parse(text), mtime
    except (OSError, UnicodeDecodeError, errors.RegistryError):
        return None


def list_repositories(layout: Layout) -> list[str]:
    """Every repository: a directory holding ``_manifests``, ``_layers`` or ``_uploads``."""
    root = layout.repositories
    names: list[str] = []
    for dirpath, dirnames, _ in os.walk(root):
        if {"_manifests", "_layers", "_uploads"} & set(dirnames):
            rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
            if rel != ".":
                names.append(rel)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(("_", ".")))
    return sorted(names)


def _digest_links(base: Path, leaf: str = "link") -> dict[Digest, float]:
    """``base/<alg>/<hex>/link`` entries whose content matches their path."""
    out: dict[Digest, float] = {}
    for alg in _names(base):
        for hexdir in _names(base / alg):
            found = _link(base / alg / hexdir / leaf)
            if found and found[0].algorithm == alg and found[0].hex == hexdir:
                out[found[0]] = found[1]
    return out


def scan_repository(layout: Layout, name: str) -> RepoScan:
    """Revisions, tags (current links), layer links and upload sessions (their ``startedat``)
    of ``name``."""
    scan = RepoScan(name)
    scan.revisions = _digest_links(layout.revisions_dir(name))
    scan.layers = _digest_links(layout.layers_dir(name))
    tags_dir = layout.tags_dir(name)
    for tag in _names(tags_dir):
        found = _link(tags_dir / tag / "current" / "link")
        if found is not None:
            scan.tags[tag] = found
    uploads = layout.uploads_dir(name)
    for entry in _names(uploads):
        path = uploads / entry
        if path.is_dir():
            try:
                scan.uploads.append(started_at(path))
            except OSError:
                continue
    return scan


def iter_blobs(layout: Layout) -> Iterator[tuple[Digest, int, float]]:
    """Every committed blob: (digest, size, commit time = mtime)."""
    base = layout.blobs
    for alg in _names(base):
        for prefix in _names(base / alg):
            for hexdir in _names(base / alg / prefix):
                try:
                    digest = Digest.parse(f"{alg}:{hexdir}")
                    st = os.stat(base / alg / prefix / hexdir / "data")
                except (OSError, errors.RegistryError):
                    continue
                yield digest, st.st_size, st.st_mtime


def _digests(items: object, key: str) -> tuple[Digest, ...]:
    out = []
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                try:
                    out.append(Digest.parse(item.get(key, "")))
                except errors.RegistryError:
                    continue
    return tuple(out)


def manifest_refs(raw: bytes) -> ManifestRefs:
    """References of stored manifest bytes (lenient; garbage gives an empty result)."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return ManifestRefs(len(raw))
    if not isinstance(doc, dict):
        return ManifestRefs(len(raw))
    blobs = list(_digests([doc.get("config")], "digest"))
    blobs += _digests(doc.get("layers"), "digest")
    blobs += _digests(doc.get("blobs"), "digest")
    blobs += _digests(doc.get("fsLayers"), "blobSum")
    subject = _digests([doc.get("subject")], "digest")
    media_type = doc.get("mediaType")
    return ManifestRefs(
        size=len(raw),
        blobs=tuple(dict.fromkeys(blobs)),
        children=_digests(doc.get("manifests"), "digest"),
        subject=subject[0] if subject else None,
        media_type=media_type if isinstance(media_type, str) else "",
    )


class RefReader:
    """:func:`manifest_refs` of stored manifests by digest, each read once (a cache)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._cache: dict[Digest, ManifestRefs | None] = {}

    def __call__(self, digest: Digest) -> ManifestRefs | None:
        """None when the manifest's blob is missing or too large to be a manifest."""
        if digest in self._cache:
            return self._cache[digest]
        refs: ManifestRefs | None = None
        path = self.layout.blob_data(digest)
        try:
            if os.stat(path).st_size <= MANIFEST_READ_LIMIT:
                refs = manifest_refs(path.read_bytes())
        except OSError:
            refs = None
        self._cache[digest] = refs
        return refs

    def forget(self, digest: Digest) -> None:
        self._cache.pop(digest, None)
