"""``quayside backup``: incremental, content-addressed backups of a storage root.

The backup directory::

    DEST/
    ├── blobs/sha256/<hex[:2]>/<hex>         every blob ever backed up, once (manifests and
    │                                        snapshot documents included), verified on copy
    ├── snapshots/<UTC time>-<hex[:12]>.json one pointer per run: {"digest": <document>, ...}
    └── tmp/                                 temp files of copies in progress

A run's *snapshot document* (stored as a blob, so it has a digest of its own, which the pointer
names) lists every repository with its tags (tag -> digest), manifest revisions and linked
blobs, and the size of every blob it needs::

    {"format": "quayside-backup-snapshot/v1", "created": "...", "source": "/var/lib/registry",
     "repositories": {"team/app": {"tags": {"v1": "sha256:..."}, "revisions": [...],
                                   "layers": [...]}},
     "blobs": {"sha256:...": 1234}}

Consistency while pushes run: committed blobs are copied first (the blob tree only ever holds
complete, verified files, so nothing half-written is copied); then tags, revisions and links are
read, and every manifest the snapshot keeps is re-checked: it and everything it references
(config, layers, index children) must be in DEST, copied now if they arrived since the first
pass. A manifest whose blobs cannot be copied (gone, or corrupt at the source: scrub it) is left
out of the snapshot with the tags pointing at it, and reported. Only blobs missing from DEST are
copied, so a second run over an unchanged root copies nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from origin.snapshot import (
    CorruptBlob,
    NoProgress,
    Progress,
    copy_verified,
    iter_blobs,
    list_repositories,
    manifest_refs,
    read_link,
    read_repository,
)
from regcore.digest import Digest
from regcore.storage.blobstore import fsync_path
from regcore.storage.layout import Layout

__all__ = ["FORMAT", "BackupReport", "BackupStore", "run_backup"]

FORMAT = "quayside-backup-snapshot/v1"


class BackupStore:
    """Paths and reads of a backup directory (see the module docstring)."""

    def __init__(self, dest: str | Path) -> None:
        self.dest = Path(dest).resolve()
        self.blobs = self.dest / "blobs"
        self.snapshots = self.dest / "snapshots"
        self.tmp = self.dest / "tmp"

    def blob(self, digest: Digest) -> Path:
        return self.blobs / digest.algorithm / digest.hex[:2] / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.blob(digest).is_file()

    def snapshot_pointers(self) -> list[Path]:
        """Pointer files, oldest first (their names sort by time)."""
        if not self.snapshots.is_dir():
            return []
        return sorted(p for p in self.snapshots.glob("*.json") if not p.name.startswith("."))


@dataclass
class BackupReport:
    """What a run did (``--json`` prints :meth:`to_dict`)."""

    dest: str
    snapshot: str | None = None
    snapshot_digest: str | None = None
    repositories: int = 0
    tags: int = 0
    manifests: int = 0
    blobs_total: int = 0
    blobs_copied: int = 0
    bytes_copied: int = 0
    blobs_present: int = 0
    corrupt: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.skipped

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()} | {"ok": self.ok}


class _Run:
    def __init__(
        self, layout: Layout, backup: BackupStore, report: BackupReport, progress: Progress
    ):
        self.layout = layout
        self.backup = backup
        self.report = report
        self.progress = progress
        self.sizes: dict[Digest, int] = {}
        self.failed: dict[Digest, str] = {}
        self.needed: set[Digest] = set()

    def ensure(self, digest: Digest) -> bool:
        """The blob is in DEST (copied now if needed; in a dry run: readable at the source)."""
        if digest in self.sizes:
            return True
        if digest in self.failed:
            return False
        dst = self.backup.blob(digest)
        src = self.layout.blob_data(digest)
        try:
            if dst.is_file():
                self.sizes[digest] = dst.stat().st_size
                return True
            size = src.stat().st_size
            if not self.report.dry_run:
                copy_verified(src, dst, digest, self.backup.tmp, self.progress.advance)
            self.report.blobs_copied += 1
            self.report.bytes_copied += size
            self.sizes[digest] = size
            return True
        except CorruptBlob as exc:
            self.failed[digest] = "corrupt at the source"
            self.report.corrupt.append({"digest": str(digest), "actual": str(exc.actual)})
        except OSError as exc:
            self.failed[digest] = f"missing at the source ({type(exc).__name__})"
        return False

    def read(self, digest: Digest) -> bytes:
        """Bytes of a blob already ensured (from DEST, or from the source in a dry run)."""
        dst = self.backup.blob(digest)
        path = dst if dst.is_file() else self.layout.blob_data(digest)
        return path.read_bytes()

    def manifest_ok(self, digest: Digest, seen: dict[Digest, bool], depth: int = 0) -> bool:
        """The manifest and everything it references (recursively) are in DEST; the blobs it
        needs are added to ``self.needed``."""
        if digest in seen:
            return seen[digest]
        seen[digest] = False  # cycles (impossible by content addressing) end here
        if depth > 8 or not self.ensure(digest):
            return False
        try:
            blobs, children = manifest_refs(self.read(digest))
        except OSError:
            return False
        ok = True
        for ref in blobs + children:
            present = (
                self.manifest_ok(ref, seen, depth + 1) if ref in children else self.ensure(ref)
            )
            if not present:
                ok = False
                self.report.skipped.append(
                    {"manifest": str(digest), "missing": str(ref), "why": self.failed.get(ref, "")}
                )
        if ok:
            self.needed.update(blobs)
        seen[digest] = ok
        return ok


def run_backup(
    root: str | Path,
    dest: str | Path,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    now: dt.datetime | None = None,
) -> BackupReport:
    """Back ``root`` up into ``dest`` (see the module docstring); blocking.

    Returns the report (``ok`` False when a manifest or blob had to be left out). Raises
    FileNotFoundError when ``root`` is not a storage root, OSError when DEST cannot be
    written.
    """
    progress = progress or NoProgress()
    layout = Layout(root)
    if not layout.base.is_dir():
        raise FileNotFoundError(f"{layout.root}: not a storage root (no docker/registry/v2 in it)")
    backup = BackupStore(dest)
    report = BackupReport(dest=str(backup.dest), dry_run=dry_run)
    run = _Run(layout, backup, report, progress)
    if not dry_run:
        for d in (backup.blobs, backup.snapshots, backup.tmp):
            d.mkdir(parents=True, exist_ok=True)

    # 1. Committed blobs, each copied once ever.
    pending: list[tuple[Digest, int]] = []
    for digest, size in iter_blobs(layout):
        if backup.has(digest):
            run.sizes[digest] = size
            report.blobs_present += 1
        else:
            pending.append((digest, size))
    progress.phase("copying blobs", sum(s for _, s in pending))
    for digest, _ in pending:
        run.ensure(digest)

    # 2. Tags, revisions and links as they are now; re-verify what each manifest needs.
    names = list_repositories(layout)
    progress.phase("snapshotting repositories", len(names), unit="repositories")
    repos: dict[str, Any] = {}
    seen: dict[Digest, bool] = {}
    for name in names:
        state = read_repository(layout, name)
        # A tag read after its revision was linked (a push in between) still counts; a tag
        # left pointing at a deleted revision does not (the origin answers 404 for it).
        candidates = state.revisions | {
            d for d in state.tags.values() if read_link(layout.revision_link(name, d)) == d
        }
        revisions = sorted((d for d in candidates if run.manifest_ok(d, seen)), key=str)
        kept = set(revisions)
        tags = {}
        for tag, digest in sorted(state.tags.items()):
            if digest in kept:
                tags[tag] = str(digest)
            else:
                report.skipped.append({"repository": name, "tag": tag, "digest": str(digest)})
        layers = sorted((d for d in state.layers if run.ensure(d)), key=str)
        repos[name] = {
            "tags": tags,
            "revisions": [str(d) for d in revisions],
            "layers": [str(d) for d in layers],
        }
        report.tags += len(tags)
        report.manifests += len(revisions)
        progress.advance(1)
    report.repositories = len(repos)
    needed = set(run.needed)
    for entry in repos.values():
        for key in ("revisions", "layers"):
            needed.update(Digest.parse(d) for d in entry[key])
    blobs = {str(d): run.sizes[d] for d in sorted(needed, key=str)}
    report.blobs_total = len(blobs)

    # 3. The snapshot document, as a blob, and its pointer.
    created = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    doc = {
        "format": FORMAT,
        "created": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "source": str(layout.root),
        "repositories": repos,
        "blobs": blobs,
    }
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    digest = Digest.of(raw)
    report.snapshot_digest = str(digest)
    name = f"{created.strftime('%Y%m%dT%H%M%S.%fZ')}-{digest.hex[:12]}.json"
    report.snapshot = str(backup.snapshots / name)
    if not dry_run:
        _write_atomic(backup.blob(digest), raw, backup.tmp)
        pointer = {
            "digest": str(digest),
            "created": doc["created"],
            "source": doc["source"],
            "repositories": report.repositories,
            "tags": report.tags,
            "blobs": report.blobs_total,
            "bytes": sum(blobs.values()),
        }
        _write_atomic(backup.snapshots / name, json.dumps(pointer, indent=1).encode(), backup.tmp)
    return report


def _write_atomic(path: Path, data: bytes, tmpdir: Path) -> None:
    tmpdir.mkdir(parents=True, exist_ok=True)
    tmp = tmpdir / f"write-{uuid.uuid4().hex}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, path)
    fsync_path(path.parent)
