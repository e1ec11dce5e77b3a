"""Where maintenance work reports what it did: audit lines and events.

The interface is a plain callable taking one JSON-able mapping (:class:`AuditSink`), so the
origin's audit log (``origin/audit.py``), a notification queue or a test's list can receive
them without this package knowing which. Every mapping has ``action`` (``gc``,
``retention.delete_tag``, ``retention.delete_manifest``, ``immutability.denied``,
``quota.denied``) and ``actor`` (``gc``, ``retention``, or ``client``), plus what the action
touched (``repository``, ``tag``, ``digest``, ``rule``...).

:func:`log_sink` (the default) writes each one as a JSON log line on the
``quayside.audit`` logger. A sink must not raise; :func:`safe` wraps one so a failing sink
is logged and the maintenance run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

log = logging.getLogger("quayside.audit")


class AuditSink(Protocol):
    def __call__(self, event: Mapping[str, Any]) -> None: ...


def log_sink(event: Mapping[str, Any]) -> None:
    """One INFO line on ``quayside.audit`` with the event's fields."""
    log.info(str(event.get("action", "event")), extra={"audit": dict(event)})


def safe(sink: AuditSink) -> AuditSink:
    """``sink`` that logs (never raises) when it fails."""

    def call(event: Mapping[str, Any]) -> None:
        try:
            sink(event)
        except Exception:
            logging.getLogger("quayside.origin").exception("audit sink failed")

    return call


def audit_log_sink(audit_log: Any) -> AuditSink:
    """An :class:`AuditSink` writing to the origin's audit trail (:class:`origin.audit.
    AuditLog`): ``action``, ``actor``, ``repository``, ``tag`` (as ``reference``) and
    ``digest`` map to its fields; the policy, rule or figures become ``reason``."""

    def record(event: Mapping[str, Any]) -> None:
        extra = {
            k: v
            for k, v in event.items()
            if k not in ("action", "actor", "repository", "tag", "digest", "target")
            and v is not None
        }
        audit_log.record(
            str(event.get("action", "event")),
            actor=str(event.get("actor", "system")),
            client=None,
            result="denied" if str(event.get("action", "")).endswith(".denied") else "ok",
            repository=event.get("repository"),
            reference=event.get("tag"),
            digest=event.get("digest"),
            reason=", ".join(f"{k}={v}" for k, v in sorted(extra.items())) or None,
        )

    return record
