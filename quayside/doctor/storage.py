"""Storage checks on this host: the origin's root and the edge's cache directory.

For each directory (from the configs):

- ``writable``: the server's own probe (:func:`regcore.health.probe_writable`: two bytes
  written, fsynced, unlinked under ``_incomplete/``); ``ENOSPC``, ``EROFS``, ``EACCES`` fail
  with the errno. A read-only origin is skipped;
- ``space``: free bytes (``statvfs`` ``f_bavail``, what a non-root writer may use) below
  :attr:`Thresholds.fail_fraction` of the filesystem or :attr:`Thresholds.fail_bytes` fail,
  below the warn levels warn;
- ``inodes``: free inodes by the same fractions (skipped on filesystems without an inode
  limit);
- ``cache-bound`` (edge): ``cache.size`` larger than the whole filesystem means the disk fills
  before eviction starts (warn), larger than free space plus what the cache already holds
  is a warning too.

Blocking work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quayside.doctor.results import Result
from regcore.health import DiskSpace, describe_error, disk_space, probe_writable
from regcore.sizes import format_size
from regcore.storage.layout import Layout

if TYPE_CHECKING:
    from quayside.doctor.setup import EdgeConfig, OriginConfig

__all__ = ["Thresholds", "check_storage"]


@dataclass(frozen=True)
class Thresholds:
    """Free-space levels: under a ``fail`` level fail, under a ``warn`` level warn."""

    warn_fraction: float = 0.10
    fail_fraction: float = 0.02
    warn_bytes: int = 1 << 30
    fail_bytes: int = 64 << 20


async def check_storage(
    origin: OriginConfig | None, edge: EdgeConfig | None, thresholds: Thresholds = Thresholds()
) -> list[Result]:
    """The storage results for the directories the configs name (none without configs)."""
    out: list[Result] = []
    if origin is not None:
        layout = Layout(origin.storage.rootdirectory)
        out += await _check_dir("origin-storage", layout, thresholds, readonly=origin.readonly)
    if edge is not None:
        layout = Layout(edge.cache.dir, v2_prefix=False)
        out += await _check_dir("edge-cache", layout, thresholds, readonly=False)
        out.append(await asyncio.to_thread(_cache_bound, edge, layout))
    return out


async def _check_dir(
    group: str, layout: Layout, thresholds: Thresholds, *, readonly: bool
) -> list[Result]:
    root = layout.root
    if not root.exists():
        return [
            Result.fail(
                group,
                "directory",
                f"{root} does not exist",
                "create it (or fix the configured path) and give the server's user write access",
            )
        ]
    out: list[Result] = []
    if readonly:
        out.append(Result.skip(group, "writable", "read-only mode: nothing is written"))
    else:
        try:
            await asyncio.to_thread(probe_writable, layout)
            out.append(Result.ok(group, "writable", f"{root}: write + fsync + unlink work"))
        except OSError as exc:
            out.append(
                Result.fail(
                    group,
                    "writable",
                    f"{root}: {describe_error(exc)}",
                    _write_fix(exc),
                )
            )
    try:
        space = await asyncio.to_thread(disk_space, root)
    except OSError as exc:
        out.append(Result.fail(group, "space", f"statvfs failed: {describe_error(exc)}", ""))
        return out
    out.append(_space(group, space, thresholds))
    out.append(_inodes(group, space, thresholds))
    return out


def _write_fix(exc: OSError) -> str:
    name = describe_error(exc).split(":")[0]
    return {
        "ENOSPC": "free space (delete old images, run gc) or grow the filesystem",
        "EDQUOT": "raise the quota or free space",
        "EROFS": "remount read-write (or set storage.maintenance.readonly)",
        "EACCES": "give the server's user write access to the directory",
        "EPERM": "give the server's user write access to the directory",
    }.get(name, "check the filesystem and its permissions")


def _space(group: str, space: DiskSpace, t: Thresholds) -> Result:
    free, frac = space.free_bytes, space.free_fraction
    detail = f"{format_size(free)} free of {format_size(space.total_bytes)} ({frac:.1%})"
    data = space.to_dict()
    fix = "free space (quayside gc, retention) or grow the filesystem"
    if frac < t.fail_fraction or free < min(t.fail_bytes, space.total_bytes // 2):
        return Result.fail(group, "space", detail, fix, **data)
    if frac < t.warn_fraction or free < min(t.warn_bytes, space.total_bytes // 4):
        return Result.warn(group, "space", detail, fix, **data)
    return Result.ok(group, "space", detail, **data)


def _inodes(group: str, space: DiskSpace, t: Thresholds) -> Result:
    if not space.total_inodes:
        return Result.skip(group, "inodes", "no inode limit on this filesystem")
    frac = space.free_inode_fraction
    detail = f"{space.free_inodes} of {space.total_inodes} inodes free ({frac:.1%})"
    fix = "delete unused files (many small manifests/links) or recreate with more inodes"
    if frac < t.fail_fraction:
        return Result.fail(group, "inodes", detail, fix)
    if frac < t.warn_fraction:
        return Result.warn(group, "inodes", detail, fix)
    return Result.ok(group, "inodes", detail)


def _cache_bound(edge: EdgeConfig, layout: Layout) -> Result:
    try:
        space = disk_space(layout.root)
    except OSError as exc:
        return Result.skip("edge-cache", "cache-bound", f"statvfs failed: {describe_error(exc)}")
    bound = edge.cache.size
    held = _tree_bytes(layout.blobs)
    shown = f"cache.size {format_size(bound)}"
    if bound > space.total_bytes:
        return Result.warn(
            "edge-cache",
            "cache-bound",
            f"{shown} exceeds the filesystem ({format_size(space.total_bytes)})",
            f"set cache.size below {format_size(int(space.total_bytes * 0.9))}",
        )
    if bound > space.free_bytes + held:
        return Result.warn(
            "edge-cache",
            "cache-bound",
            f"{shown} > free space + cached blobs ({format_size(space.free_bytes + held)}):"
            " the disk fills before eviction starts",
            f"set cache.size below {format_size(int((space.free_bytes + held) * 0.9))}",
        )
    return Result.ok("edge-cache", "cache-bound", f"{shown} fits ({format_size(held)} cached now)")


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total
