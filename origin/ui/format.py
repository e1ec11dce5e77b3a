"""Jinja filters and URL helpers of the web UI (pure functions, no state).

Sizes are shown in binary units with the exact byte count in the ``title``; times in UTC as
``YYYY-MM-DD HH:MM UTC`` inside ``<time datetime=...>``; digests shortened to 12 hex digits
(the full digest stays in the link and the ``title``). Every value is escaped by Jinja's
autoescaping; these helpers return plain strings, never markup.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

__all__ = ["FILTERS", "GLOBALS", "human_bytes", "short_digest", "utc_iso", "utc_text"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
PREFIX = "/ui"


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "unknown"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def utc_iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_text(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def short_digest(digest: str | None) -> str:
    if not digest:
        return ""
    alg, _, hexpart = digest.partition(":")
    return f"{alg}:{hexpart[:12]}" if hexpart else digest[:19]


def _path(text: str) -> str:
    return quote(text, safe="/:@._-")


def url_repo(name: str) -> str:
    return f"{PREFIX}/r/{_path(name)}/"


def url_tag(name: str, tag: str) -> str:
    return f"{PREFIX}/r/{_path(name)}/-/tags/{_path(tag)}"


def url_manifest(name: str, digest: str) -> str:
    return f"{PREFIX}/r/{_path(name)}/-/manifests/{_path(digest)}"


def url_audit(name: str) -> str:
    return f"{PREFIX}/r/{_path(name)}/-/audit"


FILTERS: Mapping[str, Any] = {
    "bytes": human_bytes,
    "utc_iso": utc_iso,
    "utc_text": utc_text,
    "short": short_digest,
}
GLOBALS: Mapping[str, Any] = {
    "url_repo": url_repo,
    "url_tag": url_tag,
    "url_manifest": url_manifest,
    "url_audit": url_audit,
    "prefix": PREFIX,
}
