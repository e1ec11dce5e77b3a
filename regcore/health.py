"""Health checks both servers share: storage writable, disk headroom, a cached result.

- :func:`probe_writable` writes two bytes to a fresh dot file (names from
  :meth:`regcore.storage.layout.Layout.temp_file`, under ``_incomplete/``: crash recovery and
  the temp walk skip dot files), ``fsync`` s it and unlinks it. Blocking.
- :func:`disk_space` reads ``statvfs`` of a directory: free bytes and inodes (as an
  unprivileged writer sees them) and the totals. Blocking.
- :class:`CachedCheck` runs an async check at most once per ``ttl`` seconds; concurrent
  callers share the run in flight, and a run is bounded by ``timeout`` (a hung disk or server
  gives a failed result after ``timeout`` instead of a hung health endpoint).
- :class:`Check` is one named result (``ok`` and a short ``detail``); :class:`HealthReport`
  gathers them into the JSON body both servers answer ``/healthz`` and ``/readyz`` with::

      {"status": "ok" | "degraded" | "unhealthy" | "unavailable",
       "checks": {"storage": {"ok": true, "detail": "writable"}, ...}, ...}

Guarantees: no check raises (an exception becomes a failed :class:`Check` naming its type and
``strerror``); the probe leaves no file behind when it returns, whatever it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from aiohttp import web

from regcore.background import cancel_and_wait
from regcore.sizes import format_size
from regcore.storage.layout import Layout

__all__ = [
    "PROBE_TIMEOUT",
    "RESULT_TTL",
    "CachedCheck",
    "Check",
    "DiskSpace",
    "HealthReport",
    "describe_error",
    "disk_space",
    "headroom",
    "probe_writable",
]

T = TypeVar("T")
RESULT_TTL = 2.0  # seconds a result is reused: a probe storm costs one probe per TTL
PROBE_TIMEOUT = 2.0  # seconds a storage probe or a Redis ping may take before it counts as failed


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``ok``, a short ``detail`` (never a secret), extra JSON fields."""

    ok: bool
    detail: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, **self.extra}


@dataclass(frozen=True)
class DiskSpace:
    """``statvfs`` of one filesystem: what an unprivileged writer may still use."""

    free_bytes: int
    total_bytes: int
    free_inodes: int
    total_inodes: int

    @property
    def free_fraction(self) -> float:
        return self.free_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def free_inode_fraction(self) -> float:
        """1.0 on filesystems without an inode limit (``f_files`` 0: btrfs, some overlays)."""
        return self.free_inodes / self.total_inodes if self.total_inodes else 1.0

    def to_dict(self) -> dict[str, int]:
        return {
            "free_bytes": self.free_bytes,
            "total_bytes": self.total_bytes,
            "free_inodes": self.free_inodes,
            "total_inodes": self.total_inodes,
        }


def disk_space(path: str | os.PathLike[str]) -> DiskSpace:
    """``statvfs`` of the filesystem holding ``path`` (its nearest existing ancestor when it
    does not exist yet). Blocking. Raises OSError."""
    target = Path(path)
    while not target.exists() and target.parent != target:
        target = target.parent
    st = os.statvfs(target)
    return DiskSpace(
        free_bytes=st.f_bavail * st.f_frsize,
        total_bytes=st.f_blocks * st.f_frsize,
        free_inodes=st.f_favail,
        total_inodes=st.f_files,
    )


def headroom(space: DiskSpace, *, min_fraction: float = 0.05) -> Check:
    """``ok`` while at least ``min_fraction`` of the bytes and of the inodes are free; the
    detail says how much is left either way and ``extra`` carries the figures."""
    low = space.free_fraction < min_fraction
    low_inodes = space.free_inode_fraction < min_fraction
    detail = f"{format_size(space.free_bytes)} free ({space.free_fraction:.0%})"
    if space.total_inodes:
        detail += f", {space.free_inodes} inodes free ({space.free_inode_fraction:.0%})"
    if low or low_inodes:
        detail = (
            (
                "low on space and inodes"
                if low and low_inodes
                else "low on space"
                if low
                else "low on inodes"
            )
            + ": "
            + detail
        )
    return Check(not (low or low_inodes), detail, space.to_dict())


def probe_writable(layout: Layout) -> None:
    """Create ``_incomplete/`` if needed, write two bytes to a fresh dot file, fsync, unlink.
    Blocking. Raises OSError (``ENOSPC`` on a full disk, ``EROFS``, ``EACCES``...)."""
    layout.incomplete.mkdir(parents=True, exist_ok=True)
    probe = layout.temp_file(".health-")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            probe.unlink()


def describe_error(exc: BaseException) -> str:
    """``ENOSPC: No space left on device``-style text for an exception (no paths, no secrets)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{name}: {exc.strerror}" if exc.strerror else name
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


class CachedCheck(Generic[T]):
    """Run ``check`` at most once per ``ttl`` s, bounded by ``timeout`` s; never raises.

    A failure (exception or timeout) becomes ``on_error(description)`` (by default a failed
    :class:`Check`) and is cached like a success: a broken disk is probed once per ``ttl``,
    not once per request. Not thread-safe: one event loop.
    """

    def __init__(
        self,
        check: Callable[[], Awaitable[T]],
        *,
        ttl: float = RESULT_TTL,
        timeout: float = PROBE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[str], T] | None = None,
    ) -> None:
        self._check = check
        self.ttl = ttl
        self.timeout = timeout
        self._clock = clock
        self._on_error: Callable[[str], Any] = on_error or (lambda detail: Check(False, detail))
        self._result: T | None = None
        self._at = 0.0
        self._running: asyncio.Task[T] | None = None

    async def get(self) -> T:
        """The cached result if younger than ``ttl``, else a fresh one (shared by callers)."""
        if self._result is not None and self._clock() - self._at < self.ttl:
            return self._result
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._run())
        return await asyncio.shield(self._running)

    async def _run(self) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                result = await self._check()
        except Exception as exc:  # a check's failure is its result, whatever it is
            result = self._on_error(describe_error(exc))
        self._result, self._at, self._running = result, self._clock(), None
        return result

    async def close(self) -> None:
        """Cancel a run in flight (at shutdown)."""
        task, self._running = self._running, None
        if task is not None:
            await cancel_and_wait(task)


@dataclass(frozen=True)
class HealthReport:
    """The body and status of a ``/healthz`` or ``/readyz`` answer.

    ``status`` is ``ok`` (every check passed), ``degraded`` (a check failed that does not stop
    serving), ``unhealthy`` (a required check failed: 503) or ``unavailable`` (starting or
    stopping: 503). ``reason`` names the failed checks when not ``ok``.
    """

    checks: Mapping[str, Check]
    required: frozenset[str]
    serving: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [name for name, c in self.checks.items() if not c.ok]

    @property
    def status(self) -> str:
        if not self.serving:
            return "unavailable"
        failed = self.failed
        if any(name in self.required for name in failed):
            return "unhealthy"
        return "degraded" if failed else "ok"

    @property
    def http_status(self) -> int:
        return 200 if self.status in ("ok", "degraded") else 503

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.extra, "status": self.status}
        if self.status != "ok":
            failed = self.failed
            out["reason"] = (
                "starting or stopping"
                if not self.serving
                else "; ".join(f"{n}: {self.checks[n].detail}" for n in failed)
            )
        out["checks"] = {name: c.to_dict() for name, c in self.checks.items()}
        return out

    def response(self) -> web.Response:
        return web.json_response(
            self.body(), status=self.http_status, headers={"Cache-Control": "no-store"}
        )
