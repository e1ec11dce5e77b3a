"""The origin's operations keys: garbage collection, retention, tag immutability, quotas and
inventory, all under the Quayside-only ``quayside:`` section of the origin's ``config.yml``
(registry:2 has no such keys and ignores nothing: it would refuse them, so they live in our
own section)::

    quayside:
      gc:                      # scheduled online garbage collection in the running origin
        enabled: false         # (``quayside gc`` works whatever this says)
        interval: 24h          # time between runs (the first runs one interval after start)
        grace: 1h              # blobs, links and manifests younger than this are never swept
        delete_untagged: false # also delete manifests no tag, index or subject reaches
        dryrun: false          # report what would go, delete nothing
      retention:
        enabled: false         # scheduled application of the policies below
        interval: 6h
        policies:              # first policy whose glob matches a repository applies
          - repositories: "team/**"         # glob: * within a path component, ** across
            keep_last: 10                   # the 10 most recently pushed tags stay
            keep_tags: "^v[0-9]"            # tags matching this regex (search) stay
            untagged_older_than: 7d         # untagged manifests pushed before that go
            tags_older_than: 90d            # tags pushed before that go ...
            unless_pulled_within: 30d       # ... unless pulled within this window
      immutability:
        rules:                              # a matching tag cannot be moved or deleted
          - repositories: "release/**"
          - repositories: "**"
            tags: "^v[0-9]"                 # regex (search); absent: every tag
        refuse_latest: ["prod/**"]          # pushing the tag ``latest`` is refused here
      quotas:
        namespaces: {team-a: 10GiB, "*": 100GiB}   # first path component of a repository
      inventory:
        pulls_flush_interval: 30s           # pull times are batched in memory this long
        usage_interval: 5m                  # namespace usage metric refresh
        ui_refresh: 30s                     # web UI: changes made outside this process
                                            # (another origin or registry:2 on the root,
                                            # files removed by hand) show within this

Durations take Go's syntax (``90m``, ``168h``) or days/weeks (``7d``, ``2w``). Environment
overrides follow the usual rule (``QUAYSIDE_GC_GRACE=30m``, ``REGISTRY_QUAYSIDE_GC_ENABLED``).
Every problem raises :class:`~regcore.configschema.ConfigError` naming the key, e.g.
``quayside.retention.policies[1].keep_last``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from regcore.configschema import Getter, Leaf, SubKeyError, typename
from regcore.configvalues import BOOL, as_size, as_str, as_str_list
from regcore.sizes import parse_duration

__all__ = [
    "OPS_SCHEMA",
    "GcConfig",
    "ImmutabilityConfig",
    "ImmutabilityRule",
    "InventoryConfig",
    "OpsConfig",
    "QuotaConfig",
    "RetentionConfig",
    "RetentionPolicy",
    "glob_regex",
    "ops_config",
    "parse_age",
]

_DAYS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dw])\s*$")


def parse_age(v: Any) -> float:
    """Seconds from ``7d``, ``2w``, Go durations (``36h``, ``90m``) or a number; ``>= 0``."""
    if isinstance(v, str):
        m = _DAYS.match(v)
        if m:
            return float(m.group(1)) * (86400.0 if m.group(2) == "d" else 7 * 86400.0)
    seconds = parse_duration(v)
    if seconds < 0:
        raise ValueError(f"must not be negative, got {v!r}")
    return seconds


@functools.lru_cache(maxsize=1024)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A repository glob as a compiled full-match regex: ``*`` any run of characters within
    one path component, ``**`` any run across components (``a/**`` matches ``a/b`` and
    ``a/b/c``), ``?`` one character other than ``/``; everything else literal."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out))


def _glob(v: Any) -> str:
    s = as_str(v).strip()
    if not s:
        raise ValueError("empty glob")
    return s


def _regex(v: Any) -> str:
    s = as_str(v)
    try:
        re.compile(s)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {s!r}: {exc}") from None
    return s


def _age(v: Any) -> float:
    return parse_age(v)


def _positive_age(v: Any) -> float:
    d = parse_age(v)
    if d <= 0:
        raise ValueError(f"must be > 0, got {v!r}")
    return d


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ValueError(f"expected a whole number, got {typename(v)}")
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"expected a whole number, got {v!r}") from None
    if n < 0:
        raise ValueError(f"must be >= 0, got {n}")
    return n


# -- dataclasses ---------------------------------------------------------------------------
@dataclass(frozen=True)
class GcConfig:
    enabled: bool = False
    interval: float = 24 * 3600.0
    grace: float = 3600.0
    delete_untagged: bool = False
    dryrun: bool = False


@dataclass(frozen=True)
class RetentionPolicy:
    """One policy; ``None`` fields are rules not in force. See the module docstring."""

    repositories: str
    keep_last: int | None = None
    keep_tags: str | None = None
    untagged_older_than: float | None = None
    tags_older_than: float | None = None
    unless_pulled_within: float | None = None

    def matches(self, name: str) -> bool:
        return glob_regex(self.repositories).fullmatch(name) is not None

    @property
    def deletes_tags(self) -> bool:
        return self.keep_last is not None or self.tags_older_than is not None


@dataclass(frozen=True)
class RetentionConfig:
    enabled: bool = False
    interval: float = 6 * 3600.0
    policies: tuple[RetentionPolicy, ...] = ()

    def policy_for(self, name: str) -> RetentionPolicy | None:
        """The first policy whose glob matches ``name``."""
        return next((p for p in self.policies if p.matches(name)), None)


@dataclass(frozen=True)
class ImmutabilityRule:
    repositories: str
    tags: str | None = None  # regex searched in the tag; None: every tag

    def describe(self) -> str:
        return f"repositories {self.repositories!r}" + (
            f", tags {self.tags!r}" if self.tags is not None else ""
        )


@dataclass(frozen=True)
class ImmutabilityConfig:
    rules: tuple[ImmutabilityRule, ...] = ()
    refuse_latest: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuotaConfig:
    """Bytes per namespace glob (first path component of a repository), first match wins."""

    namespaces: tuple[tuple[str, int], ...] = ()

    def limit_for(self, namespace: str) -> tuple[str, int] | None:
        for glob, limit in self.namespaces:
            if glob_regex(glob).fullmatch(namespace):
                return glob, limit
        return None


@dataclass(frozen=True)
class InventoryConfig:
    pulls_flush_interval: float = 30.0
    usage_interval: float = 300.0
    ui_refresh: float = 30.0


@dataclass(frozen=True)
class OpsConfig:
    gc: GcConfig = field(default_factory=GcConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    immutability: ImmutabilityConfig = field(default_factory=ImmutabilityConfig)
    quotas: QuotaConfig = field(default_factory=QuotaConfig)
    inventory: InventoryConfig = field(default_factory=InventoryConfig)


# -- list/mapping leaves -------------------------------------------------------------------
_POLICY_KEYS: dict[str, Any] = {
    "repositories": _glob,
    "keep_last": _count,
    "keep_tags": _regex,
    "untagged_older_than": _age,
    "tags_older_than": _age,
    "unless_pulled_within": _positive_age,
}
_RULE_KEYS: dict[str, Any] = {"repositories": _glob, "tags": _regex}


def _entries(v: Any, keys: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(v, list | tuple):
        raise ValueError(f"expected a list, got {typename(v)}")
    out = []
    for i, item in enumerate(v):
        if not isinstance(item, Mapping):
            raise SubKeyError(f"[{i}]", f"expected a mapping, got {typename(item)}")
        entry: dict[str, Any] = {}
        for key, value in item.items():
            coerce = keys.get(str(key))
            if coerce is None:
                raise SubKeyError(f"[{i}].{key}", "unknown key")
            if value is None:
                continue
            try:
                entry[str(key)] = coerce(value)
            except ValueError as exc:
                raise SubKeyError(f"[{i}].{key}", str(exc)) from None
        if "repositories" not in entry:
            raise SubKeyError(f"[{i}].repositories", "required")
        out.append(entry)
    return out


def _policies(v: Any) -> tuple[RetentionPolicy, ...]:
    return tuple(RetentionPolicy(**e) for e in _entries(v, _POLICY_KEYS))


def _rules(v: Any) -> tuple[ImmutabilityRule, ...]:
    return tuple(ImmutabilityRule(**e) for e in _entries(v, _RULE_KEYS))


def _globs(v: Any) -> tuple[str, ...]:
    return tuple(_glob(g) for g in as_str_list(v))


def _namespaces(v: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(v, Mapping):
        raise ValueError(f"expected a mapping of namespace glob to size, got {typename(v)}")
    out = []
    for key, value in v.items():
        try:
            out.append((_glob(key), as_size(value)))
        except ValueError as exc:
            raise SubKeyError(str(key), str(exc)) from None
    return tuple(out)


# Merged into the origin schema's ``quayside`` section by regcore.config.
OPS_SCHEMA: dict[str, Any] = {
    "gc": {
        "enabled": BOOL,
        "interval": Leaf(_positive_age),
        "grace": Leaf(_age),
        "delete_untagged": BOOL,
        "dryrun": BOOL,
    },
    "retention": {
        "enabled": BOOL,
        "interval": Leaf(_positive_age),
        "policies": Leaf(_policies, yaml_env=True),
    },
    "immutability": {
        "rules": Leaf(_rules, yaml_env=True),
        "refuse_latest": Leaf(_globs),
    },
    "quotas": {"namespaces": Leaf(_namespaces, yaml_env=True)},
    "inventory": {
        "pulls_flush_interval": Leaf(_positive_age),
        "usage_interval": Leaf(_positive_age),
        "ui_refresh": Leaf(_positive_age),
    },
}


def ops_config(g: Getter) -> OpsConfig:
    """The operations settings of a merged origin tree read through ``g``."""
    d = OpsConfig()
    return OpsConfig(
        gc=GcConfig(
            enabled=g("quayside.gc.enabled", d.gc.enabled),
            interval=g("quayside.gc.interval", d.gc.interval),
            grace=g("quayside.gc.grace", d.gc.grace),
            delete_untagged=g("quayside.gc.delete_untagged", d.gc.delete_untagged),
            dryrun=g("quayside.gc.dryrun", d.gc.dryrun),
        ),
        retention=RetentionConfig(
            enabled=g("quayside.retention.enabled", d.retention.enabled),
            interval=g("quayside.retention.interval", d.retention.interval),
            policies=g("quayside.retention.policies", ()),
        ),
        immutability=ImmutabilityConfig(
            rules=g("quayside.immutability.rules", ()),
            refuse_latest=g("quayside.immutability.refuse_latest", ()),
        ),
        quotas=QuotaConfig(namespaces=g("quayside.quotas.namespaces", ())),
        inventory=InventoryConfig(
            pulls_flush_interval=g(
                "quayside.inventory.pulls_flush_interval", d.inventory.pulls_flush_interval
            ),
            usage_interval=g("quayside.inventory.usage_interval", d.inventory.usage_interval),
            ui_refresh=g("quayside.inventory.ui_refresh", d.inventory.ui_refresh),
        ),
    )
