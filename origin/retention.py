"""Retention: apply ``quayside.retention.policies`` to every matching repository.

:meth:`Retention.run` plans each repository with :func:`origin.retentionplan.plan_repository`
(in a worker thread), computes the bytes the next garbage collection frees because of the
plan, and unless ``dry_run`` deletes, in batches under the exclusive side of the origin's
:class:`~origin.writeguard.WriteGuard`:

* a tag only if its ``current/link`` still holds the planned digest *and* push time (a tag
  re-pushed since the plan is kept and reported as ``changed``);
* a manifest only if its revision link is unchanged, no tag points at it now and no request
  used it since the plan started (else it is kept, with the children and referrers it
  reaches). Deleting a manifest removes its revision link, its entries in tag histories and
  its referrers-index link, as ``DELETE /v2/<name>/manifests/<digest>`` does.

Blobs are not deleted here: they become unreferenced and the next ``quayside gc`` (or the
scheduled one) frees ``bytes_freed``. Every deletion is one audit event
(``retention.delete_tag`` / ``retention.delete_manifest``, with policy and reason) and one
event in distribution's shape (``{"action": "delete", "target": {...}}``) on ``events``.
Runs are serialised with garbage collection by the shared ``maintenance`` lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from origin.gcmark import closure, mark_all
from origin.opsevents import AuditSink, log_sink
from origin.progress import Progress
from origin.pulls import PullTimes, read_pulls
from origin.retentionplan import Deletion, Kept, RepoPlan, RuleFor, plan_repository, without
from origin.rootscan import RefReader, RepoScan, iter_blobs, list_repositories, scan_repository
from origin.writeguard import WriteGuard
from regcore.digest import Digest
from regcore.opsconfig import RetentionConfig
from regcore.storage.layout import Layout

log = logging.getLogger("quayside.origin.retention")

BATCH = 64
PullsOf = Callable[[str], PullTimes]


@dataclass
class RetentionReport:
    dry_run: bool
    started: float = 0.0
    finished: float = 0.0
    repositories: int = 0  # repositories a policy matched
    deleted: list[Deletion] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    changed: list[Deletion] = field(default_factory=list)  # planned, but changed meanwhile
    bytes_freed: int = 0  # what the next gc frees because of these deletions

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "started": self.started,
            "finished": self.finished,
            "repositories": self.repositories,
            "deleted": [d.to_dict() for d in self.deleted],
            "kept": [k.__dict__ for k in self.kept],
            "changed": [d.to_dict() for d in self.changed],
            "bytes_freed": self.bytes_freed,
        }


class Retention:
    """Applies the configured policies to one root."""

    def __init__(
        self,
        config: RetentionConfig,
        layout: Layout,
        guard: WriteGuard,
        *,
        rule_for: RuleFor = lambda name, tag: None,
        pulls_of: PullsOf | None = None,
        maintenance: asyncio.Lock | None = None,
        clock: Callable[[], float] = time.time,
        audit: AuditSink = log_sink,
        events: AuditSink = log_sink,
        metrics: Any = None,
    ) -> None:
        self.config = config
        self.layout = layout
        self.guard = guard
        self.rule_for = rule_for
        self.pulls_of = pulls_of or (lambda name: read_pulls(layout, name))
        self.maintenance = maintenance or asyncio.Lock()
        self.clock = clock
        self.audit = audit
        self.events = events
        self.metrics = metrics

    async def run(
        self, *, dry_run: bool = False, progress: Progress | None = None
    ) -> RetentionReport:
        """Plan and (unless ``dry_run``) apply every policy. See the module docstring."""
        progress = progress or Progress()
        async with self.maintenance:
            report = RetentionReport(dry_run=dry_run, started=self.clock())
            plans, scans, refs = await asyncio.to_thread(self._plan, report, progress)
            if not dry_run:
                await self._apply(report, plans, scans, refs, progress)
            else:
                report.deleted = [d for p in plans for d in (*p.tags, *p.manifests)]
            report.finished = self.clock()
            progress.phase("done", 0)
        log.info(
            "retention finished",
            extra={"dry_run": dry_run, "deleted": len(report.deleted), "freed": report.bytes_freed},
        )
        return report

    # -- plan -----------------------------------------------------------------------------
    def _plan(
        self, report: RetentionReport, progress: Progress
    ) -> tuple[list[RepoPlan], dict[str, RepoScan], RefReader]:
        names = list_repositories(self.layout)
        progress.phase("plan", len(names))
        refs = RefReader(self.layout)
        scans: dict[str, RepoScan] = {}
        plans: list[RepoPlan] = []
        for name in names:
            with contextlib.suppress(OSError):
                scans[name] = scan_repository(self.layout, name)
            policy = self.config.policy_for(name)
            if policy is not None and name in scans:
                plan = plan_repository(
                    scans[name], policy, self.pulls_of(name), refs, self.rule_for, report.started
                )
                plans.append(plan)
                report.kept.extend(plan.kept)
            progress.step()
        report.repositories = len(plans)
        report.bytes_freed = self._freed(scans, plans, refs, report.started)
        return plans, scans, refs

    def _freed(
        self, scans: dict[str, RepoScan], plans: list[RepoPlan], refs: RefReader, now: float
    ) -> int:
        """Bytes live for a gc now (grace 0) that the plan makes unreachable."""
        if not any(p.tags or p.manifests for p in plans):
            return 0
        after = dict(scans)
        for plan in plans:
            after[plan.repository] = without(scans[plan.repository], plan)
        opts: dict[str, Any] = {"now": now, "grace": 0.0, "delete_untagged": False}
        live_before = mark_all(scans.values(), refs, **opts).live
        live_after = mark_all(after.values(), refs, **opts).live
        gone = live_before - live_after
        return sum(size for d, size, _ in iter_blobs(self.layout) if d in gone)

    # -- apply ----------------------------------------------------------------------------
    async def _apply(
        self,
        report: RetentionReport,
        plans: list[RepoPlan],
        scans: dict[str, RepoScan],
        refs: RefReader,
        progress: Progress,
    ) -> None:
        tags = [d for p in plans for d in p.tags]
        manifests = [d for p in plans for d in p.manifests]
        progress.phase("delete", len(tags) + len(manifests))
        spared: set[tuple[str, str]] = set()
        for items in (tags, manifests):
            for i in range(0, len(items), BATCH):
                batch = items[i : i + BATCH]
                async with self.guard.exclusive():
                    done = await asyncio.to_thread(
                        self._delete_batch, batch, scans, refs, report.started, spared
                    )
                for deletion, ok in zip(batch, done, strict=True):
                    (report.deleted if ok else report.changed).append(deletion)
                    if ok:
                        self._announce(deletion)
                progress.step(len(batch))

    def _delete_batch(
        self,
        batch: list[Deletion],
        scans: dict[str, RepoScan],
        refs: RefReader,
        since: float,
        spared: set[tuple[str, str]],
    ) -> list[bool]:
        out = []
        for d in batch:
            if d.kind == "tag":
                out.append(self._delete_tag(d))
            else:
                out.append(self._delete_manifest(d, scans[d.repository], refs, since, spared))
        return out

    def _delete_tag(self, d: Deletion) -> bool:
        link = self.layout.tag_current_link(d.repository, d.tag or "")
        try:
            st = os.stat(link)
            current = link.read_text().strip()
        except OSError:
            return False
        if current != d.digest or st.st_mtime != d.pushed:
            return False
        shutil.rmtree(self.layout.tag_dir(d.repository, d.tag or ""), ignore_errors=True)
        return True

    def _delete_manifest(
        self,
        d: Deletion,
        scan: RepoScan,
        refs: RefReader,
        since: float,
        spared: set[tuple[str, str]],
    ) -> bool:
        digest = Digest.parse(d.digest)
        link = self.layout.revision_link(d.repository, digest)
        try:
            mtime = os.stat(link).st_mtime
        except OSError:
            return False
        in_use = (
            (d.repository, d.digest) in spared
            or mtime != d.pushed
            or self.guard.touched_since(digest, since)
            or self._tagged_now(d.repository, d.digest)
        )
        if in_use:
            for m in closure([digest], refs, scan):
                spared.add((d.repository, str(m)))
            return False
        _unlink(link)
        tags_dir = self.layout.tags_dir(d.repository)
        for tag in _listdir(tags_dir):
            _unlink(tags_dir / tag / "index" / digest.algorithm / digest.hex / "link")
        got = refs(digest)
        if got is not None and got.subject is not None:
            s = got.subject
            base = self.layout.repo_dir(d.repository) / "_manifests" / "_referrers"
            _unlink(base / s.algorithm / s.hex / digest.algorithm / digest.hex / "link")
        return True

    def _tagged_now(self, name: str, digest: str) -> bool:
        tags_dir = self.layout.tags_dir(name)
        for tag in _listdir(tags_dir):
            with contextlib.suppress(OSError):
                if (tags_dir / tag / "current" / "link").read_text().strip() == digest:
                    return True
        return False

    def _announce(self, d: Deletion) -> None:
        self.audit(
            {
                "action": f"retention.delete_{d.kind}",
                "actor": "retention",
                "repository": d.repository,
                "tag": d.tag,
                "digest": d.digest,
                "policy": d.policy,
                "reason": d.reason,
            }
        )
        target: dict[str, Any] = {"repository": d.repository, "digest": d.digest}
        if d.tag is not None:
            target["tag"] = d.tag
        self.events({"action": "delete", "actor": "retention", "target": target})
        m = self.metrics
        if m is not None and hasattr(m, "counter"):
            m.counter(
                "retention_deletions", "Tags/manifests deleted by retention", ["kind"]
            ).labels(d.kind).inc()


def _listdir(path: os.PathLike[str]) -> list[str]:
    try:
        return [n for n in os.listdir(path) if not n.startswith(".")]
    except OSError:
        return []


def _unlink(link: os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(link))
