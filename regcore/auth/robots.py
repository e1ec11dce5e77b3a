"""Robot accounts for CI: a name, repository patterns, a push flag, an expiry, a secret.

A robot logs in as ``robot$NAME`` with its secret (HTTP Basic, ``docker login``, the token
service). :meth:`RobotStore.create` returns the secret once; the store keeps only its SHA-256
(the secret is 256 random bits, so a fast hash is as safe as bcrypt and costs nothing per
request); comparisons are constant-time. A robot may ``pull`` repositories matching its
patterns and ``push`` there too when created with ``push``; never ``delete``. Expired or
revoked robots are refused (:meth:`RobotStore.check` says why, for the audit trail).

The store is one JSON file (mode 0600), rewritten atomically, re-read when it changes, so the
CLI and a running origin share it. Thread-safe.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

__all__ = ["Robot", "RobotError", "RobotStore", "SECRET_PREFIX", "valid_robot_name"]

SECRET_PREFIX = "qsr_"
_NAME_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")


class RobotError(ValueError):
    """Bad robot name, duplicate, unknown robot, or an unreadable store."""


def valid_robot_name(name: str) -> bool:
    return len(name) <= 64 and _NAME_RE.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Robot:
    name: str
    repos: tuple[str, ...]
    push: bool
    created: float
    expires: float | None
    revoked: float | None
    secret_sha256: str

    def state(self, now: float) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"

    def actions(self, repository: str) -> frozenset[str]:
        """What this robot may do on ``repository`` (ignoring expiry)."""
        if not any(fnmatchcase(repository, p) for p in self.repos):
            return frozenset()
        return frozenset({"pull", "push"}) if self.push else frozenset({"pull"})

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["repos"] = list(self.repos)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Robot:
        return cls(
            name=str(doc["name"]),
            repos=tuple(str(p) for p in doc["repos"]),
            push=bool(doc["push"]),
            created=float(doc["created"]),
            expires=None if doc.get("expires") is None else float(doc["expires"]),
            revoked=None if doc.get("revoked") is None else float(doc["revoked"]),
            secret_sha256=str(doc["secret_sha256"]),
        )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class RobotStore:
    """Robots in the JSON file at ``path``; see the module docstring."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._robots: dict[str, Robot] = {}

    # -- reading -----------------------------------------------------------------------
    def _load(self) -> dict[str, Robot]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, -1)
        with self._lock:
            if stamp != self._stamp:
                self._robots = self._read() if stamp[1] >= 0 else {}
                self._stamp = stamp
            return self._robots

    def _read(self) -> dict[str, Robot]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            return {r.name: r for r in (Robot.from_json(d) for d in doc["robots"])}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RobotError(f"{self.path}: unreadable robot store ({type(exc).__name__})") from exc

    def list(self) -> list[Robot]:
        return sorted(self._load().values(), key=lambda r: r.name)

    def get(self, name: str) -> Robot | None:
        return self._load().get(name)

    def check(self, name: str, secret: str) -> tuple[Robot | None, str]:
        """``(robot, "ok")`` when ``secret`` is the active robot's, else ``(None, reason)``
        with reason ``unknown``, ``bad secret``, ``expired`` or ``revoked``."""
        robot = self._load().get(name)
        expected = robot.secret_sha256 if robot is not None else _digest("")
        match = hmac.compare_digest(_digest(secret), expected)
        if robot is None:
            return None, "unknown"
        if not match:
            return None, "bad secret"
        state = robot.state(self._clock())
        return (robot, "ok") if state == "active" else (None, state)

    # -- writing -----------------------------------------------------------------------
    def create(
        self, name: str, repos: Sequence[str], *, push: bool = False, ttl: float | None = None
    ) -> tuple[Robot, str]:
        """A new robot and its secret (shown once). Raises RobotError for a bad or taken name
        or no patterns."""
        if not valid_robot_name(name):
            raise RobotError(f"invalid robot name {name!r} (lower-case letters, digits, . _ -)")
        patterns = tuple(p.strip() for p in repos if p.strip())
        if not patterns:
            raise RobotError("a robot needs at least one repository pattern")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        robot = Robot(
            name=name,
            repos=patterns,
            push=push,
            created=now,
            expires=None if ttl is None else now + ttl,
            revoked=None,
            secret_sha256=_digest(secret),
        )
        with self._lock:
            current = self._read() if self.path.exists() else {}
            existing = current.get(name)
            if existing is not None and existing.revoked is None:
                raise RobotError(f"robot {name!r} exists (revoke it first)")
            current[name] = robot
            self._write(current)
        return robot, secret

    def revoke(self, name: str) -> Robot:
        """Mark ``name`` revoked (kept for the record). Raises RobotError if unknown."""
        with self._lock:
            current = self._read() if self.path.exists() else {}
            robot = current.get(name)
            if robot is None:
                raise RobotError(f"no robot named {name!r}")
            if robot.revoked is None:
                robot = replace(robot, revoked=self._clock())
                current[name] = robot
                self._write(current)
        return robot

    def _write(self, robots: dict[str, Robot]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"robots": [robots[n].to_json() for n in sorted(robots)]}
        fd, tmp = tempfile.mkstemp(prefix=".robots-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._stamp = None


def iso(ts: float | None) -> str:
    """``2024-05-01T12:00:00Z`` (or ``never``)."""
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
