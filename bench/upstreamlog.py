"""Counting what an upstream served, from its combined-format access log, by byte offset.

:class:`harness.accesslog.AccessLog` re-parses the whole file on every call; a benchmark's
upstream log grows to tens of thousands of lines (wrk runs against ``direct``), so this cursor
remembers a byte offset and parses only what was appended since :meth:`UpstreamLog.mark`.
Both access-log formats in this project are read: the combined format (docker-registry, nginx)
and Quayside's JSON lines (``{"method", "path", "status", "bytes", ...}``, origin and edge).
Waiting is bounded: :meth:`UpstreamLog.settle` returns after the file was unchanged for
``quiet`` seconds or after ``timeout``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from harness.accesslog import AccessRecord, parse_line


def _parse_json(line: str) -> AccessRecord | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or not {"method", "path", "status"} <= event.keys():
        return None
    target = str(event["path"])
    return AccessRecord(
        method=str(event["method"]),
        path=target.split("?", 1)[0],
        target=target,
        status=int(event["status"]),
        bytes=int(event.get("bytes") or 0),
        agent=str(event.get("user_agent") or ""),
        extra="",
    )


def parse_any(text: str) -> list[AccessRecord]:
    """Access records in ``text``, combined-format or JSON lines; other lines are skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        rec = _parse_json(line) if line.startswith("{") else parse_line(line)
        if rec is not None:
            out.append(rec)
    return out


@dataclass(frozen=True)
class Served:
    """Requests an upstream logged in a window: all of them, and the GETs of one path part."""

    requests: int
    gets: int
    get_bytes: int


class UpstreamLog:
    """A cursor over one access-log file; ``agent``/``exclude_agent`` keep only requests whose
    User-Agent contains (or does not contain) that text."""

    def __init__(self, path: Path, *, agent: str = "", exclude_agent: str = "") -> None:
        self.path = path
        self.agent = agent
        self.exclude_agent = exclude_agent
        self._offset = 0

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def mark(self) -> None:
        """Count only lines appended after now."""
        self._offset = self._size()

    def settle(self, quiet: float = 0.25, timeout: float = 5.0) -> None:
        """Wait until the file stopped growing for ``quiet`` s (at most ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        last = self._size()
        since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = self._size()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return

    def records(self) -> list[AccessRecord]:
        """Complete lines appended since :meth:`mark`."""
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        cut = data.rfind(b"\n")
        recs = parse_any(data[: cut + 1].decode("utf-8", "replace")) if cut >= 0 else []
        return [
            r
            for r in recs
            if self.agent in r.agent and not (self.exclude_agent and self.exclude_agent in r.agent)
        ]

    def served(self, *path_parts: str, records: list[AccessRecord] | None = None) -> Served:
        """Requests since :meth:`mark` (or in ``records``); the GETs whose path contains any
        of ``path_parts``, and their body bytes."""
        recs = self.records() if records is None else records
        gets = [r for r in recs if r.method == "GET" and any(p in r.path for p in path_parts)]
        return Served(requests=len(recs), gets=len(gets), get_bytes=sum(r.bytes for r in gets))
