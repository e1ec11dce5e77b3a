"""Registry events in distribution's notification format (``application/vnd.docker.distribution
.events.v1+json``), as registry:2 sends them: an envelope ``{"events": [...]}`` whose events are::

    {"id": "<uuid>", "timestamp": "2024-05-01T12:00:00.123456Z", "action": "push",
     "target": {"mediaType": "...", "size": 1234, "digest": "sha256:...", "length": 1234,
                "repository": "team/app", "url": "http://host/v2/team/app/manifests/sha256:...",
                "tag": "1.0", "fromRepository": "...", "references": [descriptor, ...]},
     "request": {"id": "...", "addr": "10.0.0.7", "host": "registry:5000", "method": "PUT",
                 "useragent": "skopeo/1.13"},
     "actor": {"name": "alice"},
     "source": {"addr": "host:5000", "instanceID": "<uuid per start>"}}

Actions: ``push`` (manifest stored; blob committed), ``pull`` (manifest or blob GET),
``mount`` (blob linked from ``fromRepository``), ``delete`` (manifest by digest, tag, blob).
Empty target fields are omitted (Go's ``omitempty``); ``request.id``, ``method`` and
``useragent`` are always present. Timestamps are UTC.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["EVENTS_MEDIA_TYPE", "RequestRecord", "SourceRecord", "Target", "envelope", "make_event"]

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"


@dataclass(frozen=True)
class RequestRecord:
    id: str
    addr: str
    host: str
    method: str
    useragent: str

    def to_dict(self) -> dict[str, str]:
        out = {"id": self.id, "method": self.method, "useragent": self.useragent}
        if self.addr:
            out["addr"] = self.addr
        if self.host:
            out["host"] = self.host
        return out


@dataclass(frozen=True)
class SourceRecord:
    addr: str
    instance_id: str

    def to_dict(self) -> dict[str, str]:
        return {"addr": self.addr, "instanceID": self.instance_id}


@dataclass(frozen=True)
class Target:
    repository: str
    media_type: str | None = None
    size: int | None = None
    digest: str | None = None
    url: str | None = None
    tag: str | None = None
    from_repository: str | None = None
    references: Sequence[dict[str, Any]] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.media_type:
            out["mediaType"] = self.media_type
        if self.size:
            out["size"] = self.size
        if self.digest:
            out["digest"] = self.digest
        if self.size:
            out["length"] = self.size
        out["repository"] = self.repository
        if self.from_repository:
            out["fromRepository"] = self.from_repository
        if self.url:
            out["url"] = self.url
        if self.tag:
            out["tag"] = self.tag
        if self.references:
            out["references"] = list(self.references)
        return out


def _timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_event(
    action: str,
    target: Target,
    *,
    request: RequestRecord | None,
    actor: str,
    source: SourceRecord,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """One event (see the module docstring); ``request`` None for events no request caused
    (retention, garbage collection)."""
    return {
        "id": str(uuid.uuid4()),
        "timestamp": _timestamp(now or dt.datetime.now(dt.UTC)),
        "action": action,
        "target": target.to_dict(),
        "request": (request or RequestRecord("", "", "", "", "")).to_dict(),
        "actor": {"name": actor} if actor else {},
        "source": source.to_dict(),
    }


def envelope(events: Sequence[dict[str, Any]]) -> bytes:
    """The POST body for ``events``."""
    return json.dumps({"events": list(events)}, separators=(",", ":")).encode()
