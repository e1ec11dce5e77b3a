"""The origin's operations features in one object, and the hooks request handlers call.

:class:`OriginOps` owns the :class:`~origin.writeguard.WriteGuard`, quotas, immutability rules,
pull recorder, garbage collector and retention of one application; :func:`install` builds it
from ``config.ops`` (:class:`regcore.opsconfig.OpsConfig`), stores it under ``state.OPS``,
adds the admin routes (:mod:`origin.admin`) and a cleanup context that:

* holds the root's :class:`~origin.rootlock.RootLock` shared while serving and creates the
  admin token;
* runs the scheduled loops: pull-time flushes, namespace usage scans (metric), and when
  enabled, garbage collection and retention;
* at shutdown cancels and awaits them, flushes pull times and releases the lock.

Hooks (each cheap when the corresponding feature is not configured):

* :meth:`OriginOps.blob_commit` around linking a committed/mounted blob: shared guard, quota
  admission (DENIED with the figure), touch as the section ends
  (:meth:`~origin.writeguard.WriteGuard.using`: the touch is never older than the link);
* :meth:`OriginOps.manifest_put` around a manifest PUT from its reference checks to its tag
  write: shared guard, per-tag immutability lock and check, quota admission of the manifest
  bytes, touch of the manifest and everything it references as the section ends;
* :attr:`OriginOps.quotas` meters upload bodies as they arrive (the upload manager asks
  :meth:`~origin.quota.Quotas.meter`; refusals are audited and counted like commit ones);
* :meth:`OriginOps.blob_check` around a blob HEAD's existence check: shared guard, touch;
* :meth:`OriginOps.check_delete` before a manifest/tag DELETE (immutability);
* :meth:`OriginOps.pulled` on manifest GET/HEAD (in memory only).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from origin import admin, state
from origin.gc import GarbageCollector
from origin.immutability import TagRules
from origin.opsevents import AuditSink, log_sink, safe
from origin.pulls import PullRecorder, PullTimes, read_pulls
from origin.quota import Quotas, namespace_of, scan_usage
from origin.retention import Retention
from origin.rootlock import RootLock, ensure_token, publish, unpublish
from origin.writeguard import WriteGuard
from regcore.background import cancel_and_wait
from regcore.digest import Digest
from regcore.opsconfig import OpsConfig

log = logging.getLogger("quayside.origin.ops")


class OriginOps:
    """Operations state of one origin application (see the module docstring)."""

    def __init__(
        self,
        config: OpsConfig,
        app: web.Application,
        *,
        clock: Callable[[], float] = time.time,
        audit: AuditSink = log_sink,
        events: AuditSink = log_sink,
    ) -> None:
        self.config = config
        layout, store, repos = app[state.LAYOUT], app[state.STORE], app[state.REPOS]
        self.layout = layout
        self.repos = repos
        self.metrics = app.get(state.METRICS)
        self.audit = safe(audit)
        self.events = safe(events)
        # Touches matter for one grace period (an hour at least); 200k digests ~ 30 MB.
        self.guard = WriteGuard(clock=clock, keep=max(config.gc.grace, 3600.0), max_entries=200_000)
        self.maintenance = asyncio.Lock()
        self.rules = TagRules(config.immutability)
        self.quotas = Quotas(
            config.quotas, layout, audit=self.audit, on_denied=self._count_quota_denial
        )
        self.pulls = PullRecorder(layout, clock=clock)
        self.gc = GarbageCollector(
            layout,
            store,
            repos,
            self.guard,
            maintenance=self.maintenance,
            clock=clock,
            metrics=self.metrics,
            audit=self.audit,
        )
        self.retention = Retention(
            config.retention,
            layout,
            self.guard,
            rule_for=self.rules.rule_for,
            pulls_of=self.pulls_of,
            maintenance=self.maintenance,
            clock=clock,
            audit=self.audit,
            events=self.events,
            metrics=self.metrics,
        )
        self.token: str | None = None
        self.url: str | None = None

    def announce(self, url: str) -> None:
        """Publish ``url`` as this root's serving origin once it starts (``origin.json``)."""
        self.url = url

    # -- hooks ----------------------------------------------------------------------------
    @asynccontextmanager
    async def blob_commit(self, name: str, digest: Digest, size: int) -> AsyncIterator[None]:
        """Around installing/linking ``digest`` into ``name``. Raises DENIED (quota)."""
        async with self.guard.using([digest]):
            reservation = await self._admit(name, digest, size)
            try:
                yield
            except BaseException:
                reservation.cancel()
                raise

    @asynccontextmanager
    async def manifest_put(
        self,
        name: str,
        tags: Sequence[str],
        digest: Digest,
        size: int,
        references: Iterable[Digest],
        current: Callable[[str], Awaitable[Digest | None]],
    ) -> AsyncIterator[None]:
        """Around a manifest PUT's checks and writes of ``digest`` under ``tags`` (the tag of
        the reference or the ``?tag=`` values). ``current(tag)`` is awaited for a tag's
        present digest when an immutability rule applies. Raises
        :class:`~origin.immutability.TagImmutable` (409 DENIED) or DENIED (quota)."""
        used = [digest, *references]
        async with self.guard.using(used), contextlib.AsyncExitStack() as locks:
            for tag in sorted(set(tags)):  # one order for every request: no deadlock
                await locks.enter_async_context(self.rules.tag_lock(name, tag))
            if self.rules.active:
                for tag in tags:
                    try:
                        self.rules.check_put(name, tag, await current(tag), digest)
                    except Exception as exc:
                        self._denied(name, tag, exc)
                        raise
            reservation = await self._admit(name, digest, size)
            try:
                yield
            except BaseException:
                reservation.cancel()
                raise

    async def _admit(self, name: str, digest: Digest, size: int) -> Any:
        return await self.quotas.admit(name, [(digest, size)])

    def _count_quota_denial(self) -> None:
        m = self.metrics
        if m is not None and hasattr(m, "counter"):
            m.counter("quota_denials", "Blob/manifest commits and uploads refused by a quota").inc()

    @asynccontextmanager
    async def blob_check(self, digest: Digest, verify: bool) -> AsyncIterator[None]:
        """Around a blob GET/HEAD's existence check. ``verify`` (a HEAD: a pusher deciding
        to skip an upload) takes the shared guard and touches the digest; a GET needs
        neither (a blob collected under it answers 404, never wrong bytes)."""
        if not verify:
            yield
            return
        async with self.guard.using((digest,)):
            yield

    def check_delete(self, name: str, tags: Iterable[str]) -> None:
        """Raise 409 DENIED if deleting ``tags`` of ``name`` breaks an immutability rule."""
        try:
            self.rules.check_delete(name, tags)
        except Exception as exc:
            self._denied(name, None, exc)
            raise

    def deleted(self, name: str) -> None:
        """A DELETE changed ``name``: its namespace's cached usage is stale."""
        self.quotas.invalidate(namespace_of(name))

    def pulled(self, name: str, digest: Digest, tag: str | None) -> None:
        self.pulls.record(name, digest, tag)

    def pulls_of(self, name: str) -> PullTimes:
        """Flushed and pending pull times of ``name`` (blocking read of the file)."""
        times = read_pulls(self.layout, name)
        times.merge(self.pulls.pending(name))
        return times

    def _denied(self, name: str, tag: str | None, exc: Exception) -> None:
        detail = getattr(exc, "detail", None)
        self.audit(
            {
                "action": "immutability.denied",
                "actor": "client",
                "repository": name,
                "tag": tag,
                "rule": detail.get("rule") if isinstance(detail, dict) else None,
            }
        )
        m = self.metrics
        if m is not None and hasattr(m, "counter"):
            m.counter("immutability_denials", "Tag writes/deletes refused as immutable").inc()

    # -- background -----------------------------------------------------------------------
    async def refresh_usage(self) -> dict[str, int]:
        usage = await asyncio.to_thread(scan_usage, self.layout)
        self.quotas.set_scanned(usage)
        return self.quotas.snapshot()

    async def usage_loop(self, interval: float) -> None:
        while True:
            try:
                await self.refresh_usage()
            except Exception:
                log.exception("namespace usage scan failed")
            await asyncio.sleep(max(interval, 1.0))

    async def run_gc(self, **kwargs: Any) -> Any:
        """:meth:`GarbageCollector.run`, then usage caches are refreshed."""
        try:
            return await self.gc.run(**kwargs)
        finally:
            await self._after_maintenance()

    async def run_retention(self, **kwargs: Any) -> Any:
        """:meth:`Retention.run`, then usage caches are refreshed."""
        try:
            return await self.retention.run(**kwargs)
        finally:
            await self._after_maintenance()

    async def _after_maintenance(self) -> None:
        self.quotas.invalidate()
        self.repos.changed(None)  # the UI's inventory: anything may have been deleted
        with contextlib.suppress(Exception):
            await self.refresh_usage()

    async def every(self, interval: float, job: Callable[[], Any], what: str) -> None:
        """Run ``job()`` every ``interval`` seconds (first after one interval) until
        cancelled; a failing run is logged and the schedule goes on."""
        while True:
            await asyncio.sleep(max(interval, 1.0))
            try:
                await job()
            except Exception:
                log.exception("scheduled run failed", extra={"job": what})


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    ops: OriginOps = app[state.OPS]
    lock = RootLock(ops.layout)
    if not await asyncio.to_thread(lock.try_shared):
        log.info("waiting for a maintenance run on this root to finish")
        await asyncio.to_thread(lock.hold_shared)
    with contextlib.suppress(OSError):
        ops.token = await asyncio.to_thread(ensure_token, ops.layout)
        if ops.url is not None:
            await asyncio.to_thread(publish, ops.layout, ops.url)
    cfg = ops.config
    loops: list[Any] = [
        ops.pulls.loop(cfg.inventory.pulls_flush_interval),
        ops.usage_loop(cfg.inventory.usage_interval),
    ]
    if not app[state.READONLY] and cfg.gc.enabled:
        gc = cfg.gc
        run_gc = functools.partial(
            ops.run_gc, grace=gc.grace, delete_untagged=gc.delete_untagged, dry_run=gc.dryrun
        )
        loops.append(ops.every(gc.interval, run_gc, "gc"))
    if not app[state.READONLY] and cfg.retention.enabled and cfg.retention.policies:
        loops.append(ops.every(cfg.retention.interval, ops.run_retention, "retention"))
    tasks = [asyncio.create_task(c, name="origin-ops") for c in loops]
    try:
        yield
    finally:
        await cancel_and_wait(*tasks)
        with contextlib.suppress(Exception):
            await ops.pulls.flush()
        with contextlib.suppress(OSError):
            await asyncio.to_thread(unpublish, ops.layout)
        lock.release()


def install(
    app: web.Application,
    config: OpsConfig,
    *,
    clock: Callable[[], float] = time.time,
    audit: AuditSink = log_sink,
    events: AuditSink = log_sink,
) -> OriginOps:
    """Create the app's :class:`OriginOps`, its admin routes, metrics and lifecycle."""
    ops = OriginOps(config, app, clock=clock, audit=audit, events=events)
    app[state.OPS] = ops
    app.cleanup_ctx.append(_lifecycle)
    admin.add_routes(app)
    if ops.metrics is not None and hasattr(ops.metrics, "registry"):
        admin.register_metrics(ops)
    return ops


def ops_of(app: web.Application) -> OriginOps | None:
    return app.get(state.OPS)
