"""The audit trail: one JSON line per security-relevant event.

Events (``action``): ``login`` (result ``ok``/``failed``/``throttled``), ``token`` (a token
issued, with the granted ``scopes``), ``pull`` (manifest GET), ``push`` (blob committed or
manifest stored), ``tag`` (a tag moved: ``from`` → ``to`` digest), ``delete``, ``denied``
(401/403/429 from access control), ``robot.create`` and ``robot.revoke``. Every line has::

    {"time": "2024-05-01T12:00:00.123Z", "actor": "user:alice" | "robot:ci" | "anonymous",
     "client": "10.0.0.7", "action": "push", "repository": "team/app", "reference": "1.0",
     "digest": "sha256:...", "result": "ok", "request_id": "9f0c..."}

(absent values are ``null``; ``reason``, ``scopes``, ``from``, ``to`` only where they apply).
Only these named fields are written, each a string cut to 512 characters: there is no way to
pass a header, password or token into a line (:meth:`AuditLog.record` takes no free-form
mapping, and ``reason`` strings come from the code, never from the request).

Lines go to a file that rotates at ``maxbytes`` keeping ``backups`` old files (``audit.log.1``
...), created with mode 0600, and optionally to stdout. Thread-safe (logging's handler lock).
:func:`read_events` reads the current file and its backups, oldest first.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from regcore.auth.config import AuditConfig

__all__ = ["AuditLog", "read_events"]

_MAX_FIELD = 512


def _cut(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= _MAX_FIELD else text[:_MAX_FIELD] + "..."


class AuditLog:
    """Writes audit lines per :class:`~regcore.auth.config.AuditConfig`; see the module doc.
    A disabled config writes nothing. Call :meth:`close` at shutdown."""

    def __init__(self, config: AuditConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        # A private logger (not registered with logging's manager: no global state, and no
        # propagation to the process's own log).
        self._logger = logging.Logger("quayside.audit", logging.INFO)
        self._logger.propagate = False
        if config.enabled and config.path:
            path = Path(config.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
            handler: logging.Handler = logging.handlers.RotatingFileHandler(
                path,
                maxBytes=config.maxbytes,
                backupCount=config.backups,
                encoding="utf-8",
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(handler)
        if config.enabled and config.stdout:
            out = logging.StreamHandler(sys.stdout)
            out.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(out)

    @property
    def path(self) -> str:
        return self.config.path

    def record(
        self,
        action: str,
        *,
        actor: str,
        client: str | None,
        result: str = "ok",
        repository: str | None = None,
        reference: str | None = None,
        digest: str | None = None,
        request_id: str | None = None,
        reason: str | None = None,
        scopes: Sequence[str] | None = None,
        moved_from: str | None = None,
        moved_to: str | None = None,
    ) -> dict[str, Any]:
        """Write one event line and return it (as written)."""
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        event: dict[str, Any] = {
            "time": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "actor": _cut(actor),
            "client": _cut(client),
            "action": _cut(action),
            "repository": _cut(repository),
            "reference": _cut(reference),
            "digest": _cut(digest),
            "result": _cut(result),
            "request_id": _cut(request_id),
        }
        if reason is not None:
            event["reason"] = _cut(reason)
        if scopes is not None:
            event["scopes"] = [_cut(s) for s in scopes]
        if moved_from is not None or moved_to is not None:
            event["from"] = _cut(moved_from)
            event["to"] = _cut(moved_to)
        if self._logger.handlers:
            self._logger.info(json.dumps(event, separators=(",", ":")))
        return event

    def close(self) -> None:
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)


def read_events(path: str | Path, backups: int = 100) -> Iterator[dict[str, Any]]:
    """Every event in ``path`` and its rotated backups (``path.N``), oldest first; lines that
    are not JSON objects are skipped."""
    base = Path(path)
    files = [base.with_name(f"{base.name}.{n}") for n in range(backups, 0, -1)]
    for file in [*files, base]:
        try:
            fh = file.open(encoding="utf-8")
        except FileNotFoundError:
            continue
        with fh:
            for line in fh:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event
