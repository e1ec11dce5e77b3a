"""The origin's event configuration: distribution's ``notifications:`` plus ``quayside.notifications``
and ``quayside.replication``.

Distribution's section, as registry:2 reads it::

    notifications:
      events: {includereferences: true}          # manifest events list their references
      endpoints:
        - name: audit-hook                       # [A-Za-z0-9._-], unique
          url: https://hooks.example/registry    # where envelopes are POSTed
          headers: {Authorization: [Bearer x]}   # a string or a list per header
          timeout: 1s                            # per delivery attempt (default 1s)
          threshold: 10                          # failures in a row before backing off
          backoff: 1s                            # wait between attempts once backing off
          ignoredmediatypes: [application/octet-stream]
          ignore: {mediatypes: [...], actions: [pull]}
          disabled: false
          tls: {ca: /etc/quayside/hooks-ca.crt}  # ours: see below and regcore/tlsclient.py

Our own sections (paths default under ``<root>/quayside/``)::

    quayside:
      notifications: {directory: DIR/quayside/notifications, maxpending: 10000}  # envelopes
      replication:
        directory: DIR/quayside/replication      # the on-disk job queues
        maxpending: 10000
        reconcile: {interval: 1h}                # 0: only `quayside replicate --reconcile`
        targets:
          - name: dr-site
            url: https://registry.dr.example:5000
            username: replicator                 # optional (anonymous pushes otherwise)
            password_file: /etc/quayside/dr.pw   # required with username; read at start-up
            repositories: ["team/*", "base/**"]  # globs (fnmatch: * also crosses '/')
            replicate_deletes: false
            timeout: 30s                         # per request to the target
            backoff: 5s                          # between retries once 3 in a row failed
            tls:                                 # https targets only; all keys optional
              ca: /etc/quayside/dr-ca.crt        # PEM bundle trusted besides the system store
              certificate: /etc/quayside/rep.crt # client certificate (mTLS), with key
              key: /etc/quayside/rep.key
              servername: registry.dr.example    # SNI / name to verify, if not the URL's host
              insecureskipverify: false          # true: no verification (warned at start-up)

``tls`` (on endpoints and targets; registry:2's endpoints have none) is checked at load by
:func:`regcore.tlsclient.as_client_tls`: files exist, are readable and hold PEM, the key
matches the certificate; errors name the dotted key (``...targets[0].tls.key``).

:func:`notifications_config` and :func:`replication_config` raise
:class:`~regcore.configschema.ConfigError` naming the key (``notifications.endpoints[1].url``).
Endpoint URLs and headers, and replication passwords, never appear in ``repr()``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from regcore.configschema import ConfigError, Getter, Leaf, SubKeyError, typename
from regcore.configvalues import BOOL, DURATION, PATH, as_str, as_str_list, as_url, int_at_least
from regcore.sizes import parse_duration
from regcore.tlsclient import ClientTLS, as_client_tls

__all__ = [
    "ACTIONS",
    "NOTIFICATIONS_SCHEMA",
    "QUAYSIDE_NOTIFICATIONS_SCHEMA",
    "REPLICATION_SCHEMA",
    "EndpointConfig",
    "NotificationsConfig",
    "ReplicationConfig",
    "ReplicationTarget",
    "notifications_config",
    "replication_config",
]

ACTIONS = ("push", "pull", "delete", "mount")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True)
class EndpointConfig:
    name: str
    url: str = field(repr=False)
    headers: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )
    timeout: float = 1.0
    threshold: int = 10
    backoff: float = 1.0
    ignored_mediatypes: frozenset[str] = frozenset()
    ignored_actions: frozenset[str] = frozenset()
    disabled: bool = False
    tls: ClientTLS | None = None

    def ignores(self, action: str, media_type: str | None) -> bool:
        """True when an event with this action / target media type is not for this endpoint."""
        return action in self.ignored_actions or (
            media_type is not None and media_type in self.ignored_mediatypes
        )


@dataclass(frozen=True)
class NotificationsConfig:
    endpoints: tuple[EndpointConfig, ...] = ()
    includereferences: bool = False
    directory: str = ""
    maxpending: int = 10000

    @property
    def active(self) -> tuple[EndpointConfig, ...]:
        return tuple(e for e in self.endpoints if not e.disabled)


@dataclass(frozen=True)
class ReplicationTarget:
    name: str
    url: str
    repositories: tuple[str, ...]
    username: str | None = None
    password_file: str | None = None
    replicate_deletes: bool = False
    timeout: float = 30.0
    backoff: float = 5.0
    tls: ClientTLS | None = None


@dataclass(frozen=True)
class ReplicationConfig:
    targets: tuple[ReplicationTarget, ...] = ()
    reconcile_interval: float = 3600.0
    directory: str = ""
    maxpending: int = 10000


def _mapping(v: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise SubKeyError(where, f"expected a mapping, got {typename(v)}")
    return v


def _check_keys(item: Mapping[str, Any], where: str, known: set[str]) -> None:
    unknown = sorted(set(map(str, item)) - known)
    if unknown:
        raise SubKeyError(f"{where}.{unknown[0]}", "unknown key")


def _sub(where: str, key: str, fn: Any, value: Any) -> Any:
    try:
        return fn(value)
    except SubKeyError as exc:
        raise SubKeyError(f"{where}.{key}.{exc.subpath}", exc.problem) from None
    except (ValueError, TypeError) as exc:
        raise SubKeyError(f"{where}.{key}", str(exc)) from None


def _headers(v: Any) -> Mapping[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for k, vals in _mapping(v, "headers").items():
        if not _HEADER.fullmatch(str(k)):
            raise SubKeyError(str(k), "not a valid header name")
        seq = [vals] if isinstance(vals, str | int | float) and not isinstance(vals, bool) else vals
        if not isinstance(seq, list | tuple):
            raise SubKeyError(str(k), "expected a string or a list of strings")
        cleaned = tuple(as_str(x) for x in seq)
        if any("\r" in x or "\n" in x for x in cleaned):
            raise SubKeyError(str(k), "header values must not contain line breaks")
        out[str(k)] = cleaned
    return MappingProxyType(out)


def _name(v: Any) -> str:
    s = as_str(v)
    if not _NAME.fullmatch(s):
        raise ValueError(f"invalid name {s!r}: letters, digits, '.', '_', '-' (max 64)")
    return s


def _bool(v: Any) -> bool:
    return BOOL.coerce(v)  # type: ignore[no-any-return]


def _actions(v: Any) -> frozenset[str]:
    acts = as_str_list(v)
    for a in acts:
        if a not in ACTIONS:
            raise ValueError(f"unknown action {a!r} (one of {', '.join(ACTIONS)})")
    return frozenset(acts)


def _endpoints(v: Any) -> tuple[EndpointConfig, ...]:
    if not isinstance(v, list | tuple):
        raise ValueError(f"expected a list of endpoints, got {typename(v)}")
    out: list[EndpointConfig] = []
    known = {"name", "url", "headers", "timeout", "threshold", "backoff"}
    known |= {"ignoredmediatypes", "ignore", "disabled", "tls"}
    for i, raw in enumerate(v):
        where = f"[{i}]"
        item = _mapping(raw, where)
        _check_keys(item, where, known)
        for key in ("name", "url"):
            if not item.get(key):
                raise SubKeyError(f"{where}.{key}", "required")
        ignore = _mapping(item.get("ignore") or {}, f"{where}.ignore")
        _check_keys(ignore, f"{where}.ignore", {"mediatypes", "actions"})
        media = set(
            _sub(where, "ignoredmediatypes", as_str_list, item.get("ignoredmediatypes", []))
        )
        media |= set(_sub(where, "ignore.mediatypes", as_str_list, ignore.get("mediatypes", [])))
        ep = EndpointConfig(
            name=_sub(where, "name", _name, item["name"]),
            url=_sub(where, "url", as_url, item["url"]),
            headers=_sub(where, "headers", _headers, item.get("headers") or {}),
            timeout=_sub(where, "timeout", _positive, item.get("timeout", 1.0)),
            threshold=_sub(where, "threshold", int_at_least(0), item.get("threshold", 10)),
            backoff=_sub(where, "backoff", _positive, item.get("backoff", 1.0)),
            ignored_mediatypes=frozenset(media),
            ignored_actions=_sub(where, "ignore.actions", _actions, ignore.get("actions", [])),
            disabled=_sub(where, "disabled", _bool, item.get("disabled", False)),
            tls=_tls(where, item),
        )
        if any(e.name == ep.name for e in out):
            raise SubKeyError(f"{where}.name", f"duplicate endpoint name {ep.name!r}")
        out.append(ep)
    return tuple(out)


def _tls(where: str, item: Mapping[str, Any]) -> ClientTLS | None:
    """``tls`` of an endpoint or target (checked files); refused with an ``http://`` URL."""
    tls = _sub(where, "tls", as_client_tls, item.get("tls"))
    if tls is not None and not str(item["url"]).lower().startswith("https://"):
        raise SubKeyError(f"{where}.tls", "TLS settings need an https:// url")
    return tls


def _positive(v: Any) -> float:
    d = parse_duration(v)
    if d <= 0:
        raise ValueError(f"must be > 0, got {v!r}")
    return d


def _targets(v: Any) -> tuple[ReplicationTarget, ...]:
    if not isinstance(v, list | tuple):
        raise ValueError(f"expected a list of targets, got {typename(v)}")
    out: list[ReplicationTarget] = []
    known = {"name", "url", "username", "password_file", "repositories", "replicate_deletes"}
    known |= {"timeout", "backoff", "tls"}
    for i, raw in enumerate(v):
        where = f"[{i}]"
        item = _mapping(raw, where)
        _check_keys(item, where, known)
        for key in ("name", "url", "repositories"):
            if not item.get(key):
                raise SubKeyError(f"{where}.{key}", "required")
        username = _sub(where, "username", as_str, item["username"]) if "username" in item else None
        password_file = item.get("password_file")
        if username and not password_file:
            raise SubKeyError(f"{where}.password_file", "required with a username")
        if password_file is not None:
            password_file = os.path.expanduser(_sub(where, "password_file", as_str, password_file))
            if not os.path.isfile(password_file):
                raise SubKeyError(
                    f"{where}.password_file", f"file {password_file!r} does not exist"
                )
        target = ReplicationTarget(
            name=_sub(where, "name", _name, item["name"]),
            url=_sub(where, "url", as_url, item["url"]),
            repositories=_sub(where, "repositories", as_str_list, item["repositories"]),
            username=username,
            password_file=password_file,
            replicate_deletes=_sub(
                where, "replicate_deletes", _bool, item.get("replicate_deletes", False)
            ),
            timeout=_sub(where, "timeout", _positive, item.get("timeout", 30.0)),
            backoff=_sub(where, "backoff", _positive, item.get("backoff", 5.0)),
            tls=_tls(where, item),
        )
        if any(t.name == target.name for t in out):
            raise SubKeyError(f"{where}.name", f"duplicate target name {target.name!r}")
        out.append(target)
    return tuple(out)


NOTIFICATIONS_SCHEMA: dict[str, Any] = {
    "events": {"includereferences": BOOL},
    "endpoints": Leaf(_endpoints, yaml_env=True),
}

QUAYSIDE_NOTIFICATIONS_SCHEMA: dict[str, Any] = {
    "directory": PATH,
    "maxpending": Leaf(int_at_least(1)),
}

REPLICATION_SCHEMA: dict[str, Any] = {
    "targets": Leaf(_targets, yaml_env=True),
    "reconcile": {"interval": DURATION},
    "directory": PATH,
    "maxpending": Leaf(int_at_least(1)),
}


def notifications_config(g: Getter, root: str) -> NotificationsConfig:
    """Build :class:`NotificationsConfig` from the merged tree (already checked by the schema)."""
    return NotificationsConfig(
        endpoints=tuple(g("notifications.endpoints", ())),
        includereferences=g("notifications.events.includereferences", False),
        directory=g(
            "quayside.notifications.directory", os.path.join(root, "quayside", "notifications")
        ),
        maxpending=g("quayside.notifications.maxpending", 10000),
    )


def replication_config(g: Getter, root: str) -> ReplicationConfig:
    """Build :class:`ReplicationConfig`. Raises ConfigError for an unreadable password file."""
    targets = tuple(g("quayside.replication.targets", ()))
    for i, t in enumerate(targets):
        if t.password_file and not os.access(t.password_file, os.R_OK):
            key = f"quayside.replication.targets[{i}].password_file"
            raise ConfigError(f"config: {key}: not readable", key=key, problem="not readable")
    return ReplicationConfig(
        targets=targets,
        reconcile_interval=g("quayside.replication.reconcile.interval", 3600.0),
        directory=g(
            "quayside.replication.directory", os.path.join(root, "quayside", "replication")
        ),
        maxpending=g("quayside.replication.maxpending", 10000),
    )
