"""When each manifest and tag was last pulled, recorded without a disk write per request.

:meth:`PullRecorder.record` (called by manifest GET/HEAD) only updates a dict in memory;
:meth:`PullRecorder.flush` merges what accumulated into one small JSON file per repository,
in a worker thread, every ``quayside.inventory.pulls_flush_interval`` and at shutdown.
Files live beside the registry:2 tree, which ignores them::

    <root>/quayside/pulls/<repository>.json
        {"manifests": {"sha256:…": 1718000000.5}, "tags": {"v1": 1718000000.5}}

Guarantees: a flush writes each file atomically (temp file + ``os.replace``) and only moves
times forward (the newer of file and memory wins), so concurrent flushers (an origin and a
CLI) never lose a later pull; a crash loses at most one interval of pull times. Memory is
bounded by the number of distinct (repository, digest/tag) pairs pulled within one interval.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from origin.rootlock import ops_dir
from regcore.digest import Digest
from regcore.storage.layout import Layout

log = logging.getLogger("quayside.origin.pulls")


def pulls_file(layout: Layout, name: str) -> Path:
    return ops_dir(layout) / "pulls" / f"{name}.json"


@dataclass
class PullTimes:
    manifests: dict[str, float] = field(default_factory=dict)
    tags: dict[str, float] = field(default_factory=dict)

    def last(self, digest: Digest | str, tag: str | None = None) -> float | None:
        """Latest pull of ``digest`` (by digest or any tag) or of ``tag``; None if never."""
        times = [self.manifests.get(str(digest))]
        if tag is not None:
            times.append(self.tags.get(tag))
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def merge(self, other: PullTimes) -> None:
        for mine, theirs in ((self.manifests, other.manifests), (self.tags, other.tags)):
            for key, t in theirs.items():
                if t > mine.get(key, 0.0):
                    mine[key] = t


def read_pulls(layout: Layout, name: str) -> PullTimes:
    """The flushed pull times of ``name`` (empty when none). Blocking."""
    try:
        doc = json.loads(pulls_file(layout, name).read_text())
    except (OSError, ValueError):
        return PullTimes()
    if not isinstance(doc, dict):
        return PullTimes()
    out = PullTimes()
    for key, target in (("manifests", out.manifests), ("tags", out.tags)):
        section = doc.get(key)
        if isinstance(section, dict):
            target.update(
                {str(k): float(v) for k, v in section.items() if isinstance(v, int | float)}
            )
    return out


def _write(layout: Layout, name: str, pending: PullTimes) -> None:
    path = pulls_file(layout, name)
    merged = read_pulls(layout, name)
    merged.merge(pending)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps({"manifests": merged.manifests, "tags": merged.tags}))
    os.replace(tmp, path)


class PullRecorder:
    """Pull times in memory until the next flush. For the tasks of one event loop."""

    def __init__(self, layout: Layout, *, clock: Callable[[], float] = time.time) -> None:
        self.layout = layout
        self.clock = clock
        self._pending: dict[str, PullTimes] = {}
        self._flush_lock = asyncio.Lock()

    def record(self, name: str, digest: Digest, tag: str | None = None) -> None:
        """Note a pull of ``name@digest`` (and ``name:tag``) now. No I/O."""
        now = self.clock()
        times = self._pending.get(name)
        if times is None:
            times = self._pending[name] = PullTimes()
        times.manifests[str(digest)] = now
        if tag is not None:
            times.tags[tag] = now

    def pending(self, name: str) -> PullTimes:
        """Pull times of ``name`` not flushed yet (a copy)."""
        times = self._pending.get(name, PullTimes())
        return PullTimes(dict(times.manifests), dict(times.tags))

    async def flush(self) -> int:
        """Write what accumulated; returns how many repositories were written. A repository
        whose write fails keeps its times in memory for the next flush."""
        async with self._flush_lock:
            batch, self._pending = self._pending, {}
            if not batch:
                return 0
            failed = await asyncio.to_thread(self._write_all, batch)
            for name in failed:  # put back, merged with anything newer
                times = self._pending.setdefault(name, PullTimes())
                times.merge(batch[name])
            return len(batch) - len(failed)

    def _write_all(self, batch: dict[str, PullTimes]) -> list[str]:
        failed = []
        for name, times in batch.items():
            try:
                _write(self.layout, name, times)
            except OSError as exc:
                log.warning("cannot record pull times", extra={"repo": name, "error": str(exc)})
                failed.append(name)
        return failed

    async def loop(self, interval: float) -> None:
        """Flush every ``interval`` seconds until cancelled (the owner flushes once more at
        shutdown)."""
        while True:
            await asyncio.sleep(max(interval, 0.05))
            try:
                await self.flush()
            except Exception:
                log.exception("flushing pull times failed")
