"""The policy section: ``quayside.policies`` in the origin's config, ``policies`` in the edge's.

Both servers read the same shape::

    policies:
      verdict_ttl: 30s          # how long a verdict is reused (origin: 0, i.e. look every pull;
                                # edge: its tags.ttl, so new or removed signatures show within it)
      verify:
        - name: team-signed                      # [A-Za-z0-9._-], unique; named in refusals
          repositories: ["team/*", "base/**"]    # fnmatch globs (* also crosses '/')
          mode: enforce                          # enforce | warn | off
          require: signed                        # the only requirement so far
          keys: [/etc/quayside/cosign.pub]       # PEM public keys (ECDSA / RSA / Ed25519)
      scan:
        - name: no-criticals
          repositories: ["team/*"]
          mode: enforce
          severity: critical                     # refuse findings at or above this
          required: false                        # true: no report is a refusal too
          allow: [CVE-2023-44487]                # ids never counted
      trivy:                                     # for `quayside scan push` (origin only)
        server: http://trivy:4954
        token_file: /etc/quayside/trivy.token
        timeout: 120s

The first policy of each kind whose globs match a repository applies to it. Keys are read at
start-up: an unreadable file or one that is not an accepted public key stops start-up with the
key named (``quayside.policies.verify[0].keys[1]``).

This module sits outside :mod:`regcore.policy` and imports the policy engine (key loading,
report parsing: cryptography among them) only while parsing a policy that needs it, so a
server whose configuration has no ``policies`` never loads that package.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from regcore.configschema import ConfigError, Getter, Leaf, SubKeyError, typename
from regcore.configvalues import DURATION, as_str, as_str_list, as_url
from regcore.sizes import parse_duration

if TYPE_CHECKING:
    from regcore.policy.keys import PublicKey

__all__ = [
    "EDGE_POLICIES_SCHEMA",
    "MODES",
    "POLICIES_SCHEMA",
    "PoliciesConfig",
    "ScanPolicy",
    "TrivyConfig",
    "VerifyPolicy",
    "policies_config",
]

MODES = ("enforce", "warn", "off")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class VerifyPolicy:
    """``require: signed`` by any of ``keys`` for repositories matching ``repositories``."""

    name: str
    repositories: tuple[str, ...]
    keys: tuple[PublicKey, ...]
    mode: str = "enforce"
    require: str = "signed"

    def matches(self, repository: str) -> bool:
        return any(fnmatchcase(repository, g) for g in self.repositories)


@dataclass(frozen=True)
class ScanPolicy:
    """Refuse findings at or above ``severity`` (unless allow-listed), or no report when
    ``required``."""

    name: str
    repositories: tuple[str, ...]
    severity: str = "CRITICAL"
    required: bool = False
    allow: frozenset[str] = frozenset()
    mode: str = "enforce"

    def matches(self, repository: str) -> bool:
        return any(fnmatchcase(repository, g) for g in self.repositories)


@dataclass(frozen=True)
class TrivyConfig:
    server: str | None = None
    token_file: str | None = None
    timeout: float = 120.0


@dataclass(frozen=True)
class PoliciesConfig:
    verify: tuple[VerifyPolicy, ...] = ()
    scan: tuple[ScanPolicy, ...] = ()
    verdict_ttl: float | None = None
    trivy: TrivyConfig = TrivyConfig()

    @property
    def active(self) -> bool:
        """Some policy is not ``off``."""
        return any(p.mode != "off" for p in (*self.verify, *self.scan))

    def verify_for(self, repository: str) -> VerifyPolicy | None:
        return next((p for p in self.verify if p.matches(repository)), None)

    def scan_for(self, repository: str) -> ScanPolicy | None:
        return next((p for p in self.scan if p.matches(repository)), None)


def _items(v: Any, what: str) -> list[Mapping[str, Any]]:
    if not isinstance(v, list | tuple):
        raise ValueError(f"expected a list of {what}, got {typename(v)}")
    for i, item in enumerate(v):
        if not isinstance(item, Mapping):
            raise SubKeyError(f"[{i}]", f"expected a mapping, got {typename(item)}")
    return list(v)


def _field(where: str, key: str, fn: Any, value: Any) -> Any:
    try:
        return fn(value)
    except SubKeyError as exc:
        raise SubKeyError(f"{where}.{key}{exc.subpath}", exc.problem) from None
    except (ValueError, TypeError) as exc:
        raise SubKeyError(f"{where}.{key}", str(exc)) from None


def _common(
    item: Mapping[str, Any], where: str, known: set[str]
) -> tuple[str, tuple[str, ...], str]:
    unknown = sorted(set(map(str, item)) - known)
    if unknown:
        raise SubKeyError(f"{where}.{unknown[0]}", "unknown key")
    for key in ("name", "repositories"):
        if not item.get(key):
            raise SubKeyError(f"{where}.{key}", "required")
    name = _field(where, "name", as_str, item["name"])
    if not _NAME.fullmatch(name):
        raise SubKeyError(f"{where}.name", f"invalid name {name!r}: letters, digits, '.', '_', '-'")
    repos = _field(where, "repositories", as_str_list, item["repositories"])
    mode = _field(where, "mode", _mode, item.get("mode", "enforce"))
    return name, repos, mode


def _mode(v: Any) -> str:
    s = as_str(v).strip().lower()
    if s not in MODES:
        raise ValueError(f"expected one of {', '.join(MODES)}, got {s!r}")
    return s


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = as_str(v).strip().lower()
    if s in ("true", "yes", "on", "1"):
        return True
    if s in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected a boolean, got {v!r}")


def _keys(v: Any) -> tuple[PublicKey, ...]:
    paths = as_str_list(v)
    if not paths:
        raise ValueError("at least one public key is required")
    from regcore.policy.keys import load_public_key_file

    keys: list[PublicKey] = []
    for i, path in enumerate(paths):
        try:
            keys.append(load_public_key_file(os.path.expanduser(path)))
        except ValueError as exc:
            raise SubKeyError(f"[{i}]", str(exc)) from None
    return tuple(keys)


def _verify(v: Any) -> tuple[VerifyPolicy, ...]:
    out: list[VerifyPolicy] = []
    for i, item in enumerate(_items(v, "verify policies")):
        where = f"[{i}]"
        name, repos, mode = _common(
            item, where, {"name", "repositories", "mode", "require", "keys"}
        )
        require = _field(where, "require", as_str, item.get("require", "signed"))
        if require != "signed":
            raise SubKeyError(f"{where}.require", f"only 'signed' is supported, got {require!r}")
        if "keys" not in item:
            raise SubKeyError(f"{where}.keys", "required")
        keys = _field(where, "keys", _keys, item["keys"])
        out.append(VerifyPolicy(name, repos, keys, mode, require))
    _unique(out, "verify")
    return tuple(out)


def _severity(v: Any) -> str:
    from regcore.policy.reports import SEVERITIES

    s = as_str(v).strip().upper()
    if s not in SEVERITIES:
        raise ValueError(f"expected one of {', '.join(x.lower() for x in SEVERITIES)}, got {v!r}")
    return s


def _scan(v: Any) -> tuple[ScanPolicy, ...]:
    out: list[ScanPolicy] = []
    known = {"name", "repositories", "mode", "severity", "required", "allow"}
    for i, item in enumerate(_items(v, "scan policies")):
        where = f"[{i}]"
        name, repos, mode = _common(item, where, known)
        out.append(
            ScanPolicy(
                name,
                repos,
                severity=_field(where, "severity", _severity, item.get("severity", "critical")),
                required=_field(where, "required", _bool, item.get("required", False)),
                allow=frozenset(_field(where, "allow", as_str_list, item.get("allow", []))),
                mode=mode,
            )
        )
    _unique(out, "scan")
    return tuple(out)


def _unique(policies: list[Any], kind: str) -> None:
    seen: set[str] = set()
    for i, p in enumerate(policies):
        if p.name in seen:
            raise SubKeyError(f"[{i}].name", f"duplicate {kind} policy name {p.name!r}")
        seen.add(p.name)


def _existing(v: Any) -> str:
    path = os.path.expanduser(as_str(v))
    if not os.path.isfile(path):
        raise ValueError(f"file {path!r} does not exist")
    return path


def _ttl(v: Any) -> float:
    d = parse_duration(v)
    if d < 0:
        raise ValueError(f"must be >= 0, got {v!r}")
    return d


POLICIES_SCHEMA: dict[str, Any] = {
    "verdict_ttl": Leaf(_ttl),
    "verify": Leaf(_verify, yaml_env=True),
    "scan": Leaf(_scan, yaml_env=True),
    "trivy": {"server": Leaf(as_url), "token_file": Leaf(_existing), "timeout": DURATION},
}


#: The edge's ``policies``: the same without ``trivy`` (scans are pushed to the origin).
EDGE_POLICIES_SCHEMA: dict[str, Any] = {k: v for k, v in POLICIES_SCHEMA.items() if k != "trivy"}


def policies_config(g: Getter, prefix: str) -> PoliciesConfig:
    """Build :class:`PoliciesConfig` from the merged tree under ``prefix`` (``quayside.policies``
    or ``policies``). Raises ConfigError when a policy name is used by both kinds."""
    verify = tuple(g(f"{prefix}.verify", ()))
    scan = tuple(g(f"{prefix}.scan", ()))
    clash = {p.name for p in verify} & {p.name for p in scan}
    if clash:
        key = f"{prefix}.scan"
        raise ConfigError(
            f"config: {key}: policy name {sorted(clash)[0]!r} is also a verify policy", key=key
        )
    return PoliciesConfig(
        verify=verify,
        scan=scan,
        verdict_ttl=g(f"{prefix}.verdict_ttl"),
        trivy=TrivyConfig(
            server=g(f"{prefix}.trivy.server"),
            token_file=g(f"{prefix}.trivy.token_file"),
            timeout=g(f"{prefix}.trivy.timeout", 120.0),
        ),
    )
