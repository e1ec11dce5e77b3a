"""Online garbage collection: mark what tags, revisions, indexes, referrers and uploads in
progress reach, sweep the rest while pushes go on.

One run (:meth:`GarbageCollector.run`):

1. **scan + mark** (a worker thread, no lock): every repository is read from disk and marked
   as :mod:`origin.gcmark` describes. Pushes continue meanwhile.
2. **sweep**, in batches of :data:`BATCH`, each under the exclusive side of the origin's
   :class:`~origin.writeguard.WriteGuard` (the lock every blob commit, mount, manifest PUT and
   blob existence check holds in shared mode). Each candidate is re-checked inside the batch
   and kept (*spared*) when a request touched it since ``start - grace`` or its file/link was
   rewritten since then. Order: dead manifests (``delete_untagged`` only; parents first, a
   spared parent spares its children and referrers), then dead layer links, then blobs.

Guarantees, for a single origin process serving the root:

* a blob or manifest that a request used while the run was going, or that was written within
  the grace period, is never deleted; a manifest PUT that races the sweep either finds all its
  blobs (and they stay) or is refused with MANIFEST_BLOB_UNKNOWN before anything is stored;
* ``dry_run`` deletes nothing and reports the same candidates (without the sweep re-check);
* one run at a time per collector (a second caller waits); deletions are idempotent, so a
  crash mid-sweep leaves a root the next run finishes.

Reports go to the caller (:class:`GcReport`), to metrics (``quayside_origin_gc_*``) and as one
audit event per run through the ``audit`` sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from origin.gcmark import Marked, mark_all
from origin.opsevents import AuditSink, log_sink
from origin.progress import Progress
from origin.repository import Repositories
from origin.rootscan import RefReader, RepoScan, iter_blobs, list_repositories, scan_repository
from origin.writeguard import WriteGuard
from regcore.digest import Digest
from regcore.storage.blobstore import FilesystemBlobStore
from regcore.storage.layout import Layout

log = logging.getLogger("quayside.origin.gc")

BATCH = 64


@dataclass
class GcReport:
    dry_run: bool
    grace: float
    delete_untagged: bool
    started: float = 0.0
    finished: float = 0.0
    repositories: int = 0
    manifests_marked: int = 0
    blobs_total: int = 0
    blobs_marked: int = 0
    blobs_young: int = 0  # unreferenced but committed within the grace period
    blobs_deleted: list[tuple[str, int]] = field(default_factory=list)  # (digest, size)
    links_pruned: list[tuple[str, str]] = field(default_factory=list)  # (repository, digest)
    manifests_deleted: list[tuple[str, str]] = field(default_factory=list)
    spared: int = 0  # candidates kept by the sweep's re-check

    @property
    def bytes_deleted(self) -> int:
        return sum(size for _, size in self.blobs_deleted)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bytes_deleted"] = self.bytes_deleted
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "repositories": self.repositories,
            "blobs_deleted": len(self.blobs_deleted),
            "bytes_deleted": self.bytes_deleted,
            "links_pruned": len(self.links_pruned),
            "manifests_deleted": len(self.manifests_deleted),
            "spared": self.spared,
            "seconds": round(self.finished - self.started, 3),
        }


class GarbageCollector:
    """Collects one root. ``guard`` is the origin's lock (a private one for offline runs)."""

    def __init__(
        self,
        layout: Layout,
        store: FilesystemBlobStore,
        repos: Repositories,
        guard: WriteGuard,
        *,
        maintenance: asyncio.Lock | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Any = None,
        audit: AuditSink = log_sink,
    ) -> None:
        self.layout = layout
        self.store = store
        self.repos = repos
        self.guard = guard
        self.maintenance = maintenance or asyncio.Lock()
        self.clock = clock
        self.metrics = metrics
        self.audit = audit

    async def run(
        self,
        *,
        dry_run: bool = False,
        grace: float = 3600.0,
        delete_untagged: bool = False,
        progress: Progress | None = None,
    ) -> GcReport:
        """One collection; see the module docstring for what is guaranteed."""
        progress = progress or Progress()
        async with self.maintenance:
            report = GcReport(dry_run=dry_run, grace=grace, delete_untagged=delete_untagged)
            report.started = self.clock()
            marked, scans, blobs, refs = await asyncio.to_thread(
                self._scan_and_mark, report, progress
            )
            sweeper = _Sweep(self, report, marked, scans, refs, progress)
            await sweeper.manifests()
            await sweeper.links()
            await sweeper.blobs(blobs)
            report.finished = self.clock()
            progress.phase("done", 0)
        self._account(report)
        return report

    def _scan_and_mark(
        self, report: GcReport, progress: Progress
    ) -> tuple[Marked, dict[str, RepoScan], list[tuple[Digest, int, float]], RefReader]:
        names = list_repositories(self.layout)
        progress.phase("mark", len(names))
        refs = RefReader(self.layout)
        scans = {}
        for name in names:
            with contextlib.suppress(OSError):
                scans[name] = scan_repository(self.layout, name)
        marked = mark_all(
            scans.values(),
            refs,
            now=report.started,
            grace=report.grace,
            delete_untagged=report.delete_untagged,
            progress=progress.step,
        )
        blobs = list(iter_blobs(self.layout))
        report.repositories = len(scans)
        report.manifests_marked = marked.manifests_marked
        report.blobs_total = len(blobs)
        report.blobs_marked = sum(1 for d, _, _ in blobs if d in marked.live)
        return marked, scans, blobs, refs

    def _account(self, report: GcReport) -> None:
        summary = report.summary()
        log.info("garbage collection finished", extra=summary)
        self.audit({"action": "gc", "actor": "gc", **summary})
        m = self.metrics
        if m is None or not hasattr(m, "counter"):
            return
        mode = "dry_run" if report.dry_run else "delete"
        m.counter("gc_runs", "Garbage collection runs", ["mode"]).labels(mode).inc()
        if report.dry_run:
            return
        m.counter("gc_blobs_deleted", "Blobs deleted by garbage collection").inc(
            len(report.blobs_deleted)
        )
        m.counter("gc_bytes_deleted", "Blob bytes deleted by garbage collection").inc(
            report.bytes_deleted
        )
        m.counter("gc_links_pruned", "Repository blob links removed by gc").inc(
            len(report.links_pruned)
        )
        m.counter("gc_manifests_deleted", "Untagged manifests deleted by gc").inc(
            len(report.manifests_deleted)
        )
        m.counter("gc_spared", "GC candidates kept because a request used them").inc(report.spared)


def _mtime(path: os.PathLike[str] | str) -> float | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime


class _Sweep:
    """The sweep of one run: batches under the exclusive lock, each candidate re-checked."""

    def __init__(
        self,
        gc: GarbageCollector,
        report: GcReport,
        marked: Marked,
        scans: dict[str, RepoScan],
        refs: RefReader,
        progress: Progress,
    ) -> None:
        self.gc = gc
        self.report = report
        self.marked = marked
        self.scans = scans
        self.refs = refs
        self.progress = progress
        self.since = report.started - report.grace

    def _used(self, digest: Digest) -> bool:
        return self.gc.guard.touched_since(digest, self.since)

    async def _batches(self, items: Sequence[Any], phase: str, fn: Callable[[Any], Any]) -> None:
        self.progress.phase(phase, len(items))
        for i in range(0, len(items), BATCH):
            batch = items[i : i + BATCH]
            if self.report.dry_run:
                for item in batch:
                    fn(item)
            else:
                async with self.gc.guard.exclusive():
                    await asyncio.to_thread(lambda b=batch: [fn(x) for x in b])
            self.progress.step(len(batch))

    # -- manifests (delete_untagged) ------------------------------------------------------
    async def manifests(self) -> None:
        items = [(repo, d) for repo, m in self.marked.repos.items() for d in m.dead_manifests]
        await self._batches(items, "manifests", self._manifest)

    def _manifest(self, item: tuple[str, Digest]) -> None:
        repo, digest = item
        mark = self.marked.repos[repo]
        if digest not in mark.dead_manifests:
            return  # spared with its parent
        layout = self.gc.layout
        link = layout.revision_link(repo, digest)
        written = _mtime(link)
        if self._used(digest) or (written is not None and written >= self.since):
            self.report.spared += len(self.marked.spare(repo, digest, self.refs, self.scans[repo]))
            return
        self.report.manifests_deleted.append((repo, str(digest)))
        if self.report.dry_run:
            return
        refs = self.refs(digest)
        _remove_link(link)
        tags_dir = layout.tags_dir(repo)
        for tag in self.scans[repo].tags:
            _remove_link(tags_dir / tag / "index" / digest.algorithm / digest.hex / "link")
        if refs is not None and refs.subject is not None:
            base = layout.repo_dir(repo) / "_manifests" / "_referrers"
            s = refs.subject
            _remove_link(base / s.algorithm / s.hex / digest.algorithm / digest.hex / "link")

    # -- layer links ----------------------------------------------------------------------
    async def links(self) -> None:
        items = [(repo, d) for repo, m in self.marked.repos.items() for d in m.dead_links]
        await self._batches(items, "links", self._link)

    def _link(self, item: tuple[str, Digest]) -> None:
        repo, digest = item
        if digest in self.marked.repos[repo].referenced:
            return  # a spared manifest uses it
        link = self.gc.layout.layer_link(repo, digest)
        written = _mtime(link)
        if written is None:
            return
        if self._used(digest) or written >= self.since:
            self.report.spared += 1
            self.marked.live.add(digest)
            return
        self.report.links_pruned.append((repo, str(digest)))
        if not self.report.dry_run:
            _remove_link(link)

    # -- blobs ----------------------------------------------------------------------------
    async def blobs(self, blobs: list[tuple[Digest, int, float]]) -> None:
        young = 0
        items = []
        for digest, size, committed in blobs:
            if digest in self.marked.live:
                continue
            if committed >= self.since:
                young += 1
                continue
            items.append((digest, size))
        self.report.blobs_young = young
        await self._batches(items, "blobs", self._blob)

    def _blob(self, item: tuple[Digest, int]) -> None:
        digest, size = item
        if digest in self.marked.live:
            return
        committed = _mtime(self.gc.layout.blob_data(digest))
        if committed is None:
            return
        if self._used(digest) or committed >= self.since:
            self.report.spared += 1
            return
        self.report.blobs_deleted.append((str(digest), size))
        if not self.report.dry_run:
            _remove_blob(self.gc.layout, digest)
            self.refs.forget(digest)


def _remove_blob(layout: Layout, digest: Digest) -> None:
    """Remove ``blobs/<alg>/<xx>/<hex>/data`` and its directory, as registry:2's gc does."""
    d = layout.blob_dir(digest)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(d / "data")
    with contextlib.suppress(OSError):
        os.rmdir(d)


def _remove_link(link: os.PathLike[str] | str) -> None:
    """Remove a link file and its now empty directory (idempotent)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(link))
