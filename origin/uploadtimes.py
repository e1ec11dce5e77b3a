"""When an upload session started, in registry:2's ``_uploads/<id>/startedat`` format.

Shared by the upload manager (which writes ``startedat`` and purges stale sessions) and garbage
collection (which keeps the blobs a push in progress linked since its session started).
Pure functions; :func:`started_at` reads one small file (blocking).
"""

from __future__ import annotations

import contextlib
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
