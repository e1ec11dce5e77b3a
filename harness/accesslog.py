"""Combined-log-format access logs (docker-registry, nginx): parse, count, wait for quiet.

A server writes its access-log line *after* the response is sent, so a test that just got its
bytes may read the log a moment too early. :meth:`AccessLog.wait_count` and
:meth:`AccessLog.wait_quiet` poll (bounded in time) instead of sleeping blindly.

Lines that are not access-log lines (the registry's logrus output, nginx notices) are ignored,
so the log file may hold both.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

# host ident user [time] "METHOD target PROTO" status bytes "referer" "agent" [extra...]
_LINE_RE = re.compile(
    r"^(?P<addr>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "
    r'"(?P<method>[A-Z]+) (?P<target>\S+)(?: (?P<proto>[^"]*))?" '
    r"(?P<status>\d{3}) (?P<bytes>\d+|-)"
    r'(?: "(?P<referer>[^"]*)" "(?P<agent>[^"]*)")?(?P<extra>.*)$'
)


@dataclass(frozen=True)
class AccessRecord:
    """One served request. ``path`` excludes the query string, ``target`` keeps it."""

    method: str
    path: str
    target: str
    status: int
    bytes: int
    agent: str
    extra: str

    @property
    def query(self) -> str:
        return urlsplit(self.target).query


def parse_line(line: str) -> AccessRecord | None:
    """Parse one combined-format line; ``None`` for anything else."""
    m = _LINE_RE.match(line.strip())
    if m is None:
        return None
    target = m["target"]
    raw_bytes = m["bytes"]
    return AccessRecord(
        method=m["method"],
        path=urlsplit(target).path,
        target=target,
        status=int(m["status"]),
        bytes=0 if raw_bytes == "-" else int(raw_bytes),
        agent=m["agent"] or "",
        extra=(m["extra"] or "").strip(),
    )


def parse_text(text: str) -> list[AccessRecord]:
    """All access records in ``text``, in order."""
    return [rec for rec in map(parse_line, text.splitlines()) if rec is not None]


class AccessLog:
    """Reads a server's log file(s); records are re-parsed on every call (files are small).

    :meth:`mark` remembers the current end so later calls count only newer requests.
    """

    def __init__(self, *paths: Path) -> None:
        self.paths = [Path(p) for p in paths]
        self._skip = 0

    def _all(self) -> list[AccessRecord]:
        out: list[AccessRecord] = []
        for path in self.paths:
            try:
                out.extend(parse_text(path.read_bytes().decode("utf-8", "replace")))
            except FileNotFoundError:
                continue
        return out

    def records(self) -> list[AccessRecord]:
        """Records since the last :meth:`mark` (all, if never marked)."""
        return self._all()[self._skip :]

    def mark(self) -> None:
        """Forget everything logged so far (for counting one phase of a test)."""
        self._skip = len(self._all())

    def count(
        self, method: str | None = None, path_substring: str = "", *, status: int | None = None
    ) -> int:
        """Requests with ``method`` (any if ``None``) whose path contains ``path_substring``."""
        return sum(
            1
            for rec in self.records()
            if (method is None or rec.method == method.upper())
            and path_substring in rec.path
            and (status is None or rec.status == status)
        )

    def bytes_sent(self, method: str | None = None, path_substring: str = "") -> int:
        """Sum of logged body bytes for the matching requests."""
        return sum(
            rec.bytes
            for rec in self.records()
            if (method is None or rec.method == method.upper()) and path_substring in rec.path
        )

    def wait_count(
        self,
        method: str | None,
        path_substring: str,
        at_least: int,
        timeout: float = 5.0,
    ) -> int:
        """Poll until ``count(...) >= at_least`` or ``timeout``; return the last count."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.count(method, path_substring)
            if n >= at_least or time.monotonic() >= deadline:
                return n
            time.sleep(0.02)

    def wait_quiet(self, quiet: float = 0.15, timeout: float = 5.0) -> list[AccessRecord]:
        """Wait until no new line arrived for ``quiet`` seconds (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        last = self._sizes()
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = self._sizes()
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= quiet:
                break
        return self.records()

    def _sizes(self) -> tuple[int, ...]:
        out = []
        for path in self.paths:
            try:
                out.append(path.stat().st_size)
            except FileNotFoundError:
                out.append(-1)
        return tuple(out)


class AccessLogged:
    """Mixin for a launcher whose ``access`` is an :class:`AccessLog`: the counting methods
    tests call on the server itself (``registry.count("GET", "/blobs/")``)."""

    access: AccessLog

    def access_log(self) -> list[AccessRecord]:
        """Access records since the last :meth:`mark_log` (all by default)."""
        return self.access.records()

    def count(
        self, method: str | None = None, path_substring: str = "", *, status: int | None = None
    ) -> int:
        """Number of logged requests with ``method`` whose path contains ``path_substring``."""
        return self.access.count(method, path_substring, status=status)

    def mark_log(self) -> None:
        """Count only requests logged after this call."""
        self.access.mark()

    def wait_quiet(self, quiet: float = 0.15, timeout: float = 5.0) -> list[AccessRecord]:
        """Wait until the log stopped growing for ``quiet`` s; return the records."""
        return self.access.wait_quiet(quiet, timeout)

    def requests_by_agent(self, agent_prefix: str) -> list[str]:
        """``"METHOD target agent"`` of each request (since the last :meth:`mark_log`) whose
        User-Agent starts with ``agent_prefix``, e.g. ``"containerd/"``: a client that went
        past its mirror straight to this server."""
        return [
            f"{r.method} {r.target} {r.agent}"
            for r in self.access.records()
            if r.agent.startswith(agent_prefix)
        ]
