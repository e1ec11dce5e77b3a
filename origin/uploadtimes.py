"""When an upload session started, in registry:2's ``_uploads/<id>/startedat`` format.

Shared by the upload manager (which writes ``startedat`` and purges stale sessions) and garbage
collection (which keeps the blobs a push in progress linked since its session started).
Pure functions; :func:`started_at` reads one small file, :func:`stale_sessions` walks the
repositories tree (both blocking).
"""

from __future__ import annotations

import contextlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path

_STARTED_RE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def rfc3339(ts: float) -> str:
    """``ts`` as registry:2 writes ``startedat`` (UTC, microseconds, ``Z``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def started_at(upload_dir: Path) -> float:
    """When a session started: its ``startedat`` (RFC 3339, any precision), else the dir
    mtime; ``inf`` when the session is gone."""
    p = upload_dir / "startedat"
    try:
        text = p.read_text().strip()
    except OSError:
        text = ""
    m = _STARTED_RE.fullmatch(text)
    if m:
        frac = (m.group(2) or "0")[:6].ljust(6, "0")
        tz = "+00:00" if m.group(3) == "Z" else m.group(3)
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}").timestamp()
    try:
        return upload_dir.stat().st_mtime
    except OSError:
        return float("inf")


def stale_sessions(root: Path, ids: re.Pattern[str], cutoff: float) -> list[tuple[str, str]]:
    """(repository, upload id) of the sessions under ``root`` (the ``repositories`` tree)
    whose id matches ``ids`` and that started before ``cutoff``. Blocking (walks the tree)."""
    out: list[tuple[str, str]] = []
    for dirpath, dirnames, _ in os.walk(root):
        if "_uploads" in dirnames:
            name = os.path.relpath(dirpath, root).replace(os.sep, "/")
            uploads = Path(dirpath) / "_uploads"
            with contextlib.suppress(OSError):
                for entry in os.scandir(uploads):
                    if ids.fullmatch(entry.name) and started_at(Path(entry.path)) < cutoff:
                        out.append((name, entry.name))
        dirnames[:] = [d for d in dirnames if not d.startswith("_")]
    return out
