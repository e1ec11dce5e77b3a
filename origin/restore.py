"""``quayside restore SNAPSHOT ROOT``: write a backup snapshot back into a storage root.

``SNAPSHOT`` is a pointer file (``DEST/snapshots/<time>-<hex>.json``) or a backup directory
(its newest snapshot). Guarantees:

- The snapshot document is read from DEST's blob store and its sha256 must equal the digest
  the pointer names, else nothing is written (:class:`SnapshotInvalid`).
- Every blob written into ROOT is hashed while copied and renamed into place only when it
  matches its digest (:func:`origin.snapshot.copy_verified`); a blob the root already has is
  kept. A blob missing or corrupt in DEST is reported; the manifests that need it and the tags
  pointing at them are then not restored (the rest is), and the report is not ``ok``.
- Links are written after the blobs they name (blob links, then revisions, then tags), each
  atomically, so an origin serving ROOT meanwhile never sees a tag whose manifest is missing.
- ``dry_run``: everything is checked (snapshot digest, presence of every blob in DEST), nothing
  is written.

Restoring into a root that already holds repositories merges: the snapshot's tags are set to
the snapshot's digests, other tags and repositories are left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from origin.backup import FORMAT, BackupStore
from origin.snapshot import (
    CorruptBlob,
    NoProgress,
    Progress,
    copy_verified,
    manifest_refs,
    write_link,
)
from regcore import errors
from regcore.digest import Digest
from regcore.reference import is_valid_tag, validate_name
from regcore.storage.layout import Layout


def _valid(name: str, entry: Any) -> bool:
    """A repository entry whose name and tags are well-formed (a snapshot is data: names
    become paths)."""
    try:
        validate_name(name)
    except errors.RegistryError:
        return False
    return isinstance(entry, dict) and all(is_valid_tag(t) for t in entry.get("tags") or {})


__all__ = ["RestoreReport", "SnapshotInvalid", "find_snapshot", "load_snapshot", "run_restore"]


class SnapshotInvalid(Exception):
    """The snapshot cannot be used: unreadable, wrong digest, unknown format."""


@dataclass
class RestoreReport:
    snapshot: str
    snapshot_digest: str
    root: str
    repositories: int = 0
    tags: int = 0
    manifests: int = 0
    blobs_written: int = 0
    bytes_written: int = 0
    blobs_present: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__) | {"ok": self.ok}


def find_snapshot(path: str | Path) -> tuple[BackupStore, Path]:
    """(backup store, pointer file) for a pointer path or a backup directory (newest).
    Raises SnapshotInvalid."""
    p = Path(path)
    if p.is_dir():
        store = BackupStore(p)
        pointers = store.snapshot_pointers()
        if not pointers:
            raise SnapshotInvalid(f"{p}: no snapshot in this backup directory")
        return store, pointers[-1]
    if not p.is_file():
        raise SnapshotInvalid(f"{p}: no such snapshot")
    return BackupStore(p.resolve().parent.parent), p


def load_snapshot(path: str | Path) -> tuple[BackupStore, Path, Digest, dict[str, Any]]:
    """Read and verify a snapshot: (store, pointer, document digest, document).
    Raises SnapshotInvalid."""
    store, pointer = find_snapshot(path)
    try:
        meta = json.loads(pointer.read_text())
        digest = Digest.parse(meta["digest"])
    except (OSError, ValueError, KeyError, TypeError, errors.RegistryError) as exc:
        raise SnapshotInvalid(f"{pointer}: not a snapshot pointer ({exc})") from None
    try:
        raw = store.blob(digest).read_bytes()
    except OSError:
        raise SnapshotInvalid(f"{pointer}: snapshot document {digest} is missing") from None
    actual = Digest.of(raw, digest.algorithm)
    if actual != digest:
        raise SnapshotInvalid(f"{pointer}: snapshot document hashes to {actual}, not {digest}")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise SnapshotInvalid(f"{pointer}: snapshot document is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SnapshotInvalid(f"{pointer}: unknown snapshot format")
    return store, pointer, digest, doc


def run_restore(
    snapshot: str | Path,
    root: str | Path,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> RestoreReport:
    """Restore ``snapshot`` into ``root`` (see the module docstring); blocking.
    Raises SnapshotInvalid (nothing written) and OSError (root not writable)."""
    progress = progress or NoProgress()
    store, pointer, digest, doc = load_snapshot(snapshot)
    layout = Layout(root)
    report = RestoreReport(str(pointer), str(digest), str(layout.root), dry_run=dry_run)
    blobs: dict[str, int] = doc.get("blobs") or {}
    repos: dict[str, Any] = doc.get("repositories") or {}

    # 1. Blobs, verified as they are written.
    good: set[Digest] = set()
    todo: list[Digest] = []
    for text in blobs:
        d = Digest.parse(text)
        if layout.blob_data(d).is_file():
            good.add(d)
            report.blobs_present += 1
        else:
            todo.append(d)
    progress.phase("restoring blobs", sum(int(blobs[str(d)]) for d in todo))
    for d in todo:
        src = store.blob(d)
        try:
            if dry_run:
                if not src.is_file():
                    raise FileNotFoundError(src)
                progress.advance(src.stat().st_size)
            else:
                copy_verified(src, layout.blob_data(d), d, layout.incomplete, progress.advance)
            good.add(d)
            report.blobs_written += 1
            report.bytes_written += int(blobs[str(d)])
        except CorruptBlob as exc:
            report.failed.append({"digest": str(d), "why": f"corrupt in backup ({exc.actual})"})
        except OSError:
            report.failed.append({"digest": str(d), "why": "missing in backup"})

    # 2. Which manifests are complete (their blobs and children all good).
    seen: dict[Digest, bool] = {}

    def complete(m: Digest, depth: int = 0) -> bool:
        if m in seen:
            return seen[m]
        seen[m] = False
        if m not in good or depth > 8:
            return False
        path = layout.blob_data(m)
        if dry_run and not path.is_file():
            path = store.blob(m)
        try:
            refs, children = manifest_refs(path.read_bytes())
        except OSError:
            return False
        seen[m] = all(r in good for r in refs) and all(complete(c, depth + 1) for c in children)
        return seen[m]

    # 3. Links: blob links, revisions, then tags.
    progress.phase("writing repositories", len(repos), unit="repositories")
    for name, entry in sorted(repos.items()):
        if not _valid(name, entry):
            report.failed.append({"repository": name[:200], "why": "invalid name or tag"})
            continue
        revisions = [Digest.parse(t) for t in entry.get("revisions", ())]
        kept = {m for m in revisions if complete(m)}
        for m in set(revisions) - kept:
            report.skipped.append({"repository": name, "manifest": str(m)})
        if not dry_run:
            for text in entry.get("layers", ()):
                d = Digest.parse(text)
                if d in good:
                    write_link(layout.layer_link(name, d), d)
            for m in sorted(kept, key=str):
                write_link(layout.revision_link(name, m), m)
        for tag, text in sorted((entry.get("tags") or {}).items()):
            m = Digest.parse(text)
            if m not in kept:
                report.skipped.append({"repository": name, "tag": tag, "manifest": text})
                continue
            if not dry_run:
                write_link(layout.tag_index_link(name, tag, m), m)
                write_link(layout.tag_current_link(name, tag), m)
            report.tags += 1
        report.manifests += len(kept)
        report.repositories += 1
        progress.advance(1)
    return report
