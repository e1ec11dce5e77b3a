"""``quayside scrub``: re-hash every committed blob of a root; quarantine the corrupt ones.

A blob whose bytes no longer hash to its name (bit rot, a bad disk, a hand edit) is moved out
of the blob tree into ``<root>/quayside/quarantine/<alg>/<hex>.<UTC time>/data``, beside a
``reason.json`` (expected and actual digest, size, time). It is never deleted: an operator can
look at it, and a backup can still restore the good bytes. The origin reads the blob tree on
every request (no cached stat), so from the moment of the move it answers 404 ``BLOB_UNKNOWN``
(``MANIFEST_UNKNOWN`` for a manifest) instead of serving bad bytes, and a client pushing the
blob again re-creates it (the store installs a digest that is absent).

Guarantees: the blob tree holds only committed files, so nothing being written is read; a blob
that vanishes during the scan (garbage collection) is skipped; an unreadable blob (I/O error)
is reported and quarantined like a corrupt one. The move is a rename on the same filesystem.
``dry_run`` hashes and reports, moves nothing. The report names, per bad blob, the repositories
that link it and the manifests (revisions) that are it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from origin.snapshot import (
    NoProgress,
    Progress,
    hash_file,
    iter_blobs,
    list_repositories,
    read_repository,
)
from regcore.digest import Digest
from regcore.storage.blobstore import fsync_path
from regcore.storage.layout import Layout

__all__ = ["ScrubReport", "quarantine_dir", "run_scrub"]


def quarantine_dir(layout: Layout) -> Path:
    """Where corrupt blobs go: ``<root>/quayside/quarantine`` (outside the blob tree)."""
    return layout.root / "quayside" / "quarantine"


@dataclass
class ScrubReport:
    root: str
    blobs: int = 0
    bytes: int = 0
    corrupt: list[dict[str, Any]] = field(default_factory=list)
    vanished: int = 0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.corrupt

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__) | {"ok": self.ok}


def run_scrub(
    root: str | Path,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    now: dt.datetime | None = None,
) -> ScrubReport:
    """Scrub ``root`` (see the module docstring); blocking. Raises FileNotFoundError when ``root``
    is not a storage root, OSError when the quarantine directory cannot be written."""
    progress = progress or NoProgress()
    layout = Layout(root)
    if not layout.base.is_dir():
        raise FileNotFoundError(f"{layout.root}: not a storage root (no docker/registry/v2 in it)")
    report = ScrubReport(str(layout.root), dry_run=dry_run)
    blobs = list(iter_blobs(layout))
    progress.phase("hashing blobs", sum(size for _, size in blobs))
    bad: list[dict[str, Any]] = []
    for digest, size in blobs:
        path = layout.blob_data(digest)
        try:
            actual, read = hash_file(path, digest.algorithm, progress.advance)
        except FileNotFoundError:
            report.vanished += 1
            continue
        except OSError as exc:
            bad.append(_entry(digest, size, None, f"unreadable: {exc.strerror or exc}"))
            continue
        report.blobs += 1
        report.bytes += read
        if actual != digest:
            bad.append(_entry(digest, read, actual, "digest mismatch"))
    if bad:
        _affected(layout, bad)
        stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        for entry in bad:
            if not dry_run:
                entry["quarantined_to"] = str(_quarantine(layout, entry, stamp))
    report.corrupt = bad
    return report


def _entry(digest: Digest, size: int, actual: Digest | None, why: str) -> dict[str, Any]:
    return {
        "digest": str(digest),
        "actual": str(actual) if actual else None,
        "size": size,
        "why": why,
        "repositories": [],
        "manifest_of": [],
    }


def _affected(layout: Layout, bad: list[dict[str, Any]]) -> None:
    """Fill in which repositories link each bad blob and which have it as a revision."""
    by_digest = {e["digest"]: e for e in bad}
    for name in list_repositories(layout):
        state = read_repository(layout, name)
        for d in state.layers:
            if str(d) in by_digest:
                by_digest[str(d)]["repositories"].append(name)
        for d in state.revisions:
            if str(d) in by_digest:
                by_digest[str(d)]["manifest_of"].append(name)


def _quarantine(layout: Layout, entry: dict[str, Any], stamp: dt.datetime) -> Path:
    digest = Digest.parse(entry["digest"])
    target = (
        quarantine_dir(layout)
        / digest.algorithm
        / f"{digest.hex}.{stamp.strftime('%Y%m%dT%H%M%S.%fZ')}"
    )
    target.mkdir(parents=True, exist_ok=True)
    src = layout.blob_data(digest)
    try:
        os.replace(src, target / "data")
    except FileNotFoundError:
        entry["why"] += " (vanished before quarantine)"
    reason = {k: v for k, v in entry.items() if k != "quarantined_to"}
    reason["time"] = stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    (target / "reason.json").write_text(json.dumps(reason, indent=1) + "\n")
    fsync_path(src.parent)
    try:
        src.parent.rmdir()  # the empty blob directory: gone, as after a delete
    except OSError:
        pass
    return target
