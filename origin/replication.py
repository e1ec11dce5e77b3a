"""Replication of pushed images to other registries (``quayside.replication``).

:class:`Replicator` listens to the origin's event hub (:mod:`origin.notifications.hub`): every
manifest push of a repository matching a target's globs becomes a job in that target's on-disk
queue (``<directory>/<target>/``, :class:`~origin.notifications.queue.DiskQueue`), and so does a
manifest or tag delete when the target has ``replicate_deletes``. One worker per target runs
the jobs in order with :class:`~origin.replicapush.TargetPusher`; a job whose target is down
or failing stays queued and is retried (``retry_delay`` then the target's backoff), so jobs
queued before a restart or during an outage are done afterwards. A job the target refuses
for good (a 4xx other than 401/408/429) is dropped, logged and audited: the next reconcile
tries again. (A manifest pushed by a sha512 digest is not refused so by a target that takes
sha256 digests only, docker-registry: it goes there under the sha256 digest of the same bytes,
see :mod:`origin.replicapush`.)

TLS: each target's ``tls`` settings become one set of SSL contexts, built in :meth:`Replicator.open`
(:func:`regcore.tlsclient.client_contexts`) and used by its client for every request; a target
with ``tls.insecureskipverify`` is named in a warning there. Credentials and tokens only go to
the target's own origin (:class:`regcore.client.transport.Transport`).

Reconcile (:meth:`Replicator.reconcile`, every ``reconcile.interval`` in the origin, or
``quayside replicate --reconcile``) compares every tag with the target and repairs drift,
whatever caused it (a queue that overflowed, a job dropped after the retry budget, pushes made
while replication was off, changes made on the target). It also compares the referrers
(signatures, SBOMs, attestations pushed by digest with a ``subject``) of every tagged manifest,
of the children of tagged indexes and of referrers, down to four levels, through the target's
referrers API or, without one, the referrers tag schema index the jobs maintain there (see
:mod:`origin.replicareferrers`); missing ones are pushed, and with ``replicate_deletes`` extra
ones removed. Each tag or referrer repaired is one audit line (action ``reconcile push``,
``reconcile delete``, ``reconcile push referrer``, ``reconcile delete referrer``, ``reconcile
repair referrers index``) and one count of the drift metric.
(One target's walk: :class:`~origin.replicareconcile.TargetReconciler`.)

Observability: audit lines (action ``replicate``, actor ``system:replication``, ``reason``
naming the target) for each job and reconcile repair; metrics ``quayside_origin_replication_
jobs_total{target,result}`` (queued, ok, failed, dropped, skipped), ``..._attempts_total
{target,result}``, ``..._blobs_total{target,how}`` (uploaded, mounted, present),
``..._bytes_total{target}``, ``..._drift_repaired_total{target}`` (tags and referrers),
``..._reconcile_runs_total
{target,result}``, ``..._pending{target}`` and ``..._last_success_timestamp_seconds{target}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from origin.audit import AuditLog
from origin.metrics import OriginMetrics
from origin.notifications.queue import DiskQueue
from origin.notifications.worker import QueueWorker
from origin.replicapush import TargetPusher, matches
from origin.replicareconcile import ReconcileReport, TargetReconciler
from origin.snapshot import Progress
from regcore import errors
from regcore.background import cancel_and_wait
from regcore.client import RegistryClient
from regcore.digest import Digest
from regcore.eventsconfig import ReplicationConfig, ReplicationTarget
from regcore.storage.layout import Layout
from regcore.tlsclient import client_contexts, warn_insecure

__all__ = ["Replicator"]

log = logging.getLogger("quayside.origin.replication")
_ACTOR = "system:replication"
_RETRYABLE = frozenset({401, 408, 429})


class _Target:
    def __init__(self, config: ReplicationTarget, queue: DiskQueue) -> None:
        self.config = config
        self.queue = queue
        self.pusher: TargetPusher | None = None
        self.reconciler: TargetReconciler | None = None
        self.client: RegistryClient | None = None
        self.worker: QueueWorker | None = None


class Replicator:
    """See the module docstring. Blocking parts run in threads; :meth:`accept` is blocking."""

    def __init__(
        self,
        config: ReplicationConfig,
        layout: Layout,
        *,
        metrics: OriginMetrics | None = None,
        audit: AuditLog | None = None,
        retry_delay: float = 1.0,
        threshold: int = 3,
    ) -> None:
        self.config = config
        self.layout = layout
        self.metrics = metrics
        self.audit = audit
        self.retry_delay = retry_delay
        self.threshold = threshold
        self.targets = [
            _Target(t, DiskQueue(Path(config.directory) / t.name, config.maxpending))
            for t in config.targets
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reconcile_lock = asyncio.Lock()
        if metrics is not None:
            pending = metrics.gauge("replication_pending", "Replication jobs queued", ["target"])
            for t in self.targets:
                pending.labels(t.config.name).set_function(t.queue.__len__)

    # -- metrics and audit ------------------------------------------------------------------
    def _count(self, name: str, doc: str, labels: dict[str, str], n: float = 1) -> None:
        if self.metrics is not None and n:
            self.metrics.counter(name, doc, list(labels)).labels(*labels.values()).inc(n)

    def _job_result(self, target: str, result: str) -> None:
        self._count(
            "replication_jobs", "Replication jobs by result", {"target": target, "result": result}
        )
        if result == "ok" and self.metrics is not None:
            self.metrics.gauge(
                "replication_last_success_timestamp_seconds",
                "When a replication job last succeeded",
                ["target"],
            ).labels(target).set(time.time())

    def _audit(self, target: str, job: dict[str, Any], result: str, why: str = "") -> None:
        if self.audit is not None:
            self.audit.record(
                "replicate",
                actor=_ACTOR,
                client=None,
                result=result,
                repository=job.get("repository"),
                reference=job.get("tag"),
                digest=job.get("digest"),
                reason=f"target {target}: {job.get('action')}" + (f": {why}" if why else ""),
            )

    # -- events in ----------------------------------------------------------------------------
    def accept(self, events: Sequence[dict[str, Any]]) -> None:
        """Hub listener: queue a job per manifest push (and delete) for each matching target.

        A job pushes under the event's ``target.tag`` when it has one (else by digest); a PUT
        by digest with ``?tag=`` arrives as one push event per tag (see
        :mod:`origin.notifications.middleware`), so each of those tags gets its own job."""
        for e in events:
            target = e.get("target") or {}
            action, repo = e.get("action"), target.get("repository", "")
            if "/manifests/" not in str(target.get("url", "")) or action not in ("push", "delete"):
                continue
            job = {
                "action": action,
                "repository": repo,
                "digest": target.get("digest"),
                "tag": target.get("tag"),
            }
            for t in self.targets:
                if not matches(t.config, repo):
                    continue
                if action == "delete" and not t.config.replicate_deletes:
                    continue
                dropped = t.queue.put([json.dumps(job).encode()], sync=True)
                self._job_result(t.config.name, "dropped" if dropped else "queued")
                if dropped:
                    log.warning(
                        "replication queue full: job dropped", extra={"target": t.config.name}
                    )
                elif t.worker is not None and self._loop is not None:
                    self._loop.call_soon_threadsafe(t.worker.wake)

    # -- jobs --------------------------------------------------------------------------------
    async def _handle(self, t: _Target, item: bytes) -> None:
        """Run one job; raises (the worker retries) unless the target refused it for good."""
        assert t.pusher is not None
        job = json.loads(item)
        name = t.config.name
        try:
            if job["action"] == "delete":
                await t.pusher.delete(job["repository"], job.get("digest"), job.get("tag"))
                self._job_result(name, "ok")
                self._audit(name, job, "ok")
                return
            result = await t.pusher.push_manifest(
                job["repository"], Digest.parse(job["digest"]), job.get("tag")
            )
        except errors.RegistryError as exc:
            if 400 <= exc.status < 500 and exc.status not in _RETRYABLE:
                self._job_result(name, "failed")
                self._audit(name, job, "failed", f"{exc.code} (dropped; reconcile retries)")
                log.error(
                    "replication job refused by the target",
                    extra={"target": name, "error": str(exc)[:300]},
                )
                return
            raise
        if result.gone:
            self._job_result(name, "skipped")
            self._audit(name, job, "skipped", "manifest no longer in the repository")
            return
        self._job_result(name, "ok")
        self._audit(name, job, "ok")

    def _on_blob(self, target: str) -> Any:
        def on_blob(how: str, nbytes: int) -> None:
            self._count(
                "replication_blobs", "Blobs handled by replication", {"target": target, "how": how}
            )
            self._count(
                "replication_bytes",
                "Blob bytes uploaded by replication",
                {"target": target},
                nbytes,
            )

        return on_blob

    def _on_attempt(self, target: str) -> Any:
        def outcome(result: str, error: BaseException | None) -> None:
            self._count(
                "replication_attempts",
                "Replication job attempts",
                {"target": target, "result": result},
            )

        return outcome

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self, *, workers: bool = True) -> None:
        """Create the clients (and start the workers and the reconcile loop) on this loop."""
        self._loop = asyncio.get_running_loop()
        for t in self.targets:
            password = None
            if t.config.password_file:
                text = await asyncio.to_thread(Path(t.config.password_file).read_text)
                password = text.rstrip("\r\n")
            warn_insecure(log, "replication target", t.config.name, t.config.tls)
            tls = await asyncio.to_thread(client_contexts, t.config.tls)
            t.client = RegistryClient(
                t.config.url,
                username=t.config.username,
                password=password,
                read_timeout=t.config.timeout,
                tls=tls,
            )
            t.pusher = TargetPusher(
                t.config, self.layout, t.client, on_blob=self._on_blob(t.config.name)
            )
            t.reconciler = TargetReconciler(t.pusher)
            if workers:
                t.worker = QueueWorker(
                    f"replication-{t.config.name}",
                    t.queue,
                    lambda item, t=t: self._handle(t, item),
                    threshold=self.threshold,
                    backoff=t.config.backoff,
                    retry_delay=self.retry_delay,
                    on_outcome=self._on_attempt(t.config.name),
                )
                t.worker.start()
        if workers and self.config.reconcile_interval > 0:
            self._tasks.append(
                asyncio.create_task(self._reconcile_loop(), name="replication-reconcile")
            )

    async def close(self) -> None:
        await cancel_and_wait(*self._tasks)
        for t in self.targets:
            if t.worker is not None:
                await t.worker.close(grace=t.config.timeout)
            if t.client is not None:
                await t.client.close()

    async def _reconcile_loop(self) -> None:
        interval = self.config.reconcile_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reconcile()
            except Exception:
                log.exception("replication reconcile failed")

    def _repaired(self, name: str, report: ReconcileReport) -> None:
        """Count and audit every tag and referrer a (non dry) reconcile run repaired."""
        jobs: list[dict[str, Any]] = []
        for action, refs in (("push", report.pushed), ("delete", report.deleted)):
            for ref in refs:
                repo, _, tag = ref.rpartition(":")
                jobs.append({"action": f"reconcile {action}", "repository": repo, "tag": tag})
        for action, refs in (
            ("push", report.referrers_pushed),
            ("delete", report.referrers_deleted),
        ):
            for ref in refs:
                repo, _, digest = ref.partition("@")
                jobs.append(
                    {"action": f"reconcile {action} referrer", "repository": repo, "digest": digest}
                )
        for ref in report.indexes_repaired:
            repo, _, tag = ref.rpartition(":")
            jobs.append(
                {"action": "reconcile repair referrers index", "repository": repo, "tag": tag}
            )
        self._count(
            "replication_drift_repaired",
            "Tags and referrers repaired by reconcile",
            {"target": name},
            len(jobs),
        )
        for job in jobs:
            self._audit(name, job, "ok")

    async def reconcile(
        self,
        *,
        target: str | None = None,
        repo_glob: str | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> list[ReconcileReport]:
        """Compare and repair every target (or one); one run at a time."""
        reports = []
        async with self._reconcile_lock:
            for t in self.targets:
                if target is not None and t.config.name != target:
                    continue
                assert t.reconciler is not None, "open() first"
                report = await t.reconciler.reconcile(
                    repo_glob=repo_glob, dry_run=dry_run, progress=progress
                )
                reports.append(report)
                name = t.config.name
                self._count(
                    "replication_reconcile_runs",
                    "Reconcile runs",
                    {"target": name, "result": "ok" if report.ok else "failed"},
                )
                if not dry_run:
                    self._repaired(name, report)
                for failure in report.failed:
                    self._audit(
                        name,
                        {"action": "reconcile", "repository": failure["ref"]},
                        "failed",
                        failure["error"][:200],
                    )
        return reports
