"""Run garbage collection or retention on a root from outside the origin: the CLI's side of
:mod:`origin.rootlock`.

:func:`run_job` takes the root's lock exclusive if it can (no origin serves the root) and runs
the job in this process, holding the lock so no origin starts meanwhile; otherwise it sends the
job to the serving origin's admin endpoint (:mod:`origin.admin`) with the root's admin token
and streams its progress. Either way ``on_progress`` receives ``{"phase", "done", "total"}``
snapshots and the result is the job's report as a dict. ``url`` forces the remote path.

Raises :class:`OpsClientError` with a one-line reason (origin unreachable, token missing,
the job failed remotely).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress

from origin.gc import GarbageCollector
from origin.immutability import TagRules
from origin.inventory import Inventory, build_inventory
from origin.opsevents import AuditSink, log_sink
from origin.progress import Progress
from origin.repository import Repositories
from origin.retention import Retention
from origin.rootlock import TOKEN_HEADER, RootLock, published, read_token
from origin.writeguard import WriteGuard
from regcore.config import load_origin_config
from regcore.storage.blobstore import FilesystemBlobStore
from regcore.storage.layout import Layout

OnProgress = Callable[[dict[str, Any]], None]
ADMIN = "/_quayside/admin"


class OpsClientError(Exception):
    """A maintenance job could not be run or failed; the message says why."""


def _remote(layout: Layout, url: str | None) -> tuple[str, str]:
    if url is None:
        info = published(layout)
        if info is None:
            raise OpsClientError(
                "an origin is serving this root but has not published its URL "
                "(quayside/origin.json); pass --url"
            )
        url = str(info["url"])
    token = read_token(layout)
    if token is None:
        raise OpsClientError("the root has no admin token (quayside/admin.token)")
    return url.rstrip("/"), token


async def _poll(job: Awaitable[Any], progress: Progress, on_progress: OnProgress) -> Any:
    task = asyncio.ensure_future(job)
    while not task.done():
        await asyncio.wait({task}, timeout=0.1)
        on_progress(progress.snapshot())
    return task.result()


async def _local(
    config: Any, kind: str, params: dict[str, Any], on_progress: OnProgress, audit: AuditSink
) -> dict[str, Any]:
    layout = Layout(config.storage.rootdirectory)
    store = FilesystemBlobStore(layout)
    guard = WriteGuard()
    progress = Progress()
    if kind == "gc":
        gc = GarbageCollector(layout, store, Repositories(layout, store), guard, audit=audit)
        job: Awaitable[Any] = gc.run(progress=progress, **params)
    else:
        retention = Retention(
            config.ops.retention,
            layout,
            guard,
            rule_for=TagRules(config.ops.immutability).rule_for,
            audit=audit,
            events=audit,
        )
        job = retention.run(progress=progress, **params)
    report = await _poll(job, progress, on_progress)
    return report.to_dict()


async def _delegate(
    url: str, token: str, kind: str, params: dict[str, Any], on_progress: OnProgress
) -> dict[str, Any]:
    query = {k: (str(int(v)) if isinstance(v, bool) else str(v)) for k, v in params.items()}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{url}{ADMIN}/{kind}", params=query, headers={TOKEN_HEADER: token}) as r,
        ):
            if r.status != 200:
                raise OpsClientError(f"{url} refused the {kind} run: {r.status} {await r.text()}")
            async for raw in r.content:
                line = json.loads(raw)
                if "report" in line:
                    return dict(line["report"])
                if "error" in line:
                    raise OpsClientError(f"{kind} failed in the origin: {line['error']}")
                on_progress(line)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise OpsClientError(f"cannot reach the origin at {url}: {exc}") from exc
    raise OpsClientError(f"the origin at {url} ended the {kind} run without a report")


async def run_job(
    config: Any,
    kind: str,
    params: dict[str, Any],
    *,
    on_progress: OnProgress = lambda p: None,
    url: str | None = None,
    audit: AuditSink = log_sink,
) -> tuple[dict[str, Any], str]:
    """Run ``kind`` (``gc`` or ``retention``) with ``params``; returns (report, where) where
    ``where`` is ``"local"`` or the origin's URL."""
    layout = Layout(config.storage.rootdirectory)
    lock = RootLock(layout)
    if url is None and await asyncio.to_thread(lock.try_exclusive):
        try:
            return await _local(config, kind, params, on_progress, audit), "local"
        finally:
            lock.release()
    lock.release()
    remote, token = _remote(layout, url)
    return await _delegate(remote, token, kind, params, on_progress), remote


async def flush_pulls(config: Any) -> bool:
    """Ask a serving origin to write its pending pull times (so an inventory is current).
    False when no origin serves the root or it cannot be reached."""
    layout = Layout(config.storage.rootdirectory)
    lock = RootLock(layout)
    try:
        if await asyncio.to_thread(lock.try_exclusive):
            return False
    finally:
        lock.release()
    try:
        url, token = _remote(layout, None)
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(f"{url}{ADMIN}/pulls/flush", headers={TOKEN_HEADER: token}) as r,
        ):
            return r.status == 200
    except (TimeoutError, OpsClientError, aiohttp.ClientError, OSError):
        return False


async def inventory(config: Any, pattern: str | None) -> Inventory:
    """Flush a serving origin's pull times (best effort), then read the root."""
    await flush_pulls(config)
    layout = Layout(config.storage.rootdirectory)
    return await asyncio.to_thread(build_inventory, layout, pattern, quotas=config.ops.quotas)


def load_config(config_file: str | None, root: str | None) -> Any:
    """The origin configuration the CLI acts on: ``--config`` < environment < ``--root``.
    Raises :class:`regcore.config.ConfigError`."""
    overrides = {"storage.filesystem.rootdirectory": root}
    return load_origin_config(config_file, os.environ, overrides)


@contextlib.contextmanager
def rich_progress(title: str, *, quiet: bool = False) -> Iterator[OnProgress]:
    """A rich progress bar (on stderr) fed by ``on_progress`` snapshots: one task per phase."""
    if quiet:
        yield lambda p: None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with RichProgress(*columns, console=Console(stderr=True), transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def update(snapshot: dict[str, Any]) -> None:
            phase = str(snapshot.get("phase", ""))
            if phase in ("start", "done", ""):
                return
            if phase not in tasks:
                for t in tasks.values():  # finish the previous phase's bar
                    bar.update(t, completed=bar.tasks[t].total or 0)
                tasks[phase] = bar.add_task(f"{title}: {phase}", total=None)
            bar.update(
                tasks[phase], completed=snapshot.get("done", 0), total=snapshot.get("total") or None
            )

        yield update
        for t in tasks.values():
            bar.update(t, completed=bar.tasks[t].total or bar.tasks[t].completed)
