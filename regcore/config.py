"""Configuration for the origin and the edge: frozen dataclasses, loaded and validated in one place.

Sources, lowest to highest precedence: built-in defaults < YAML file < environment < overrides
(the CLI). Every source is an argument, so tests pass dicts instead of patching the process::

    cfg = load_origin_config("config.yml", os.environ, {"http.addr": args.listen})
    cfg = load_edge_config(None, os.environ, {"listen": "127.0.0.1:0",
                                              "upstreams": ["docker.io=https://registry-1.docker.io"]})

Origin files use distribution's ``config.yml`` schema where it overlaps (``version``, ``log``,
``storage.filesystem``, ``storage.delete``, ``storage.maintenance``, ``storage.cache``, ``http``,
``health``, ``auth``, ``notifications``) plus our own ``quayside:`` section. Environment:
``REGISTRY_`` + the path upper-cased and joined by ``_`` (``REGISTRY_HTTP_ADDR``,
``REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED``); a name that is a section takes a YAML value
(``REGISTRY_STORAGE_MAINTENANCE_READONLY='{enabled: true}'``); ``quayside.*`` keys also as
``QUAYSIDE_LIMITS_MAX_MANIFEST_BYTES``. Unknown ``REGISTRY_*`` variables are ignored (other tools
set them); an unknown ``QUAYSIDE_*`` variable is an error (``QUAYSIDE_EDGE_*`` belongs to the edge).

Edge files use our own schema; environment ``QUAYSIDE_EDGE_`` + path (``QUAYSIDE_EDGE_CACHE_SIZE``,
``QUAYSIDE_EDGE_UPSTREAMS="docker.io=https://registry-1.docker.io,http://127.0.0.1:5000"``).
An ``upstreams`` value from a higher source replaces the whole list.

Overrides: a dict whose keys are dotted paths or nested dicts; ``None`` values mean "not given".

Guarantees: every failure raises :class:`ConfigError` naming the source and the dotted key
(``config.yml: unknown key 'storage.filesystem.rootdir'``); secrets (passwords, ``http.secret``,
Redis URLs, notification endpoints) never appear in ``repr()``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from regcore.logging import redact_url
from regcore.sizes import parse_duration, parse_size

__all__ = [
    "ConfigError",
    "EdgeCacheConfig",
    "EdgeConfig",
    "HTTPConfig",
    "HealthConfig",
    "LimitsConfig",
    "LogConfig",
    "MaintenanceConfig",
    "OriginConfig",
    "RedisConfig",
    "StorageConfig",
    "TLSConfig",
    "TagsConfig",
    "UploadPurgingConfig",
    "UpstreamConfig",
    "load_edge_config",
    "load_origin_config",
    "parse_upstream_arg",
    "split_hostport",
]


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


MiB = 1024 * 1024


# ----------------------------------------------------------------------------- schema machinery
class ConfigError(ValueError):
    """Bad configuration. ``key`` is the dotted path at fault, ``source`` where it came from."""

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        source: str | None = None,
        problem: str | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.source = source
        self.problem = problem or message


class _SubKeyError(ValueError):
    """Raised by a coercer for a problem below the key it was given (``subpath`` relative)."""

    def __init__(self, subpath: str, problem: str) -> None:
        super().__init__(f"{subpath}: {problem}")
        self.subpath = subpath
        self.problem = problem


@dataclass(frozen=True)
class _Leaf:
    """A schema leaf: ``coerce(value) -> normalized`` raising ValueError; ``alias`` of a sibling;
    ``yaml_env``: an environment value is parsed as YAML before coercion."""

    coerce: Callable[[Any], Any]
    alias: str | None = None
    yaml_env: bool = False


def _err(source: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {problem}", key=key, source=source, problem=problem)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _typename(v: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean"}.get(
        type(v), type(v).__name__
    )


def _normalize(data: Any, schema: Mapping[str, Any], path: str, source: str) -> dict[str, Any]:
    """Check ``data`` against ``schema``: unknown keys rejected, leaves coerced, aliases folded,
    ``None`` values dropped, ``{enabled: x}`` sections also accept a bare boolean."""
    if not isinstance(data, Mapping):
        raise _err(source, path or "<top level>", f"expected a mapping, got {_typename(data)}")
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        sub = _join(path, key)
        spec = schema.get(key)
        if spec is None:
            raise ConfigError(
                f"{source}: unknown key '{sub}'", key=sub, source=source, problem="unknown key"
            )
        if value is None:
            continue
        if isinstance(spec, dict):
            if isinstance(value, bool) and "enabled" in spec:
                value = {"enabled": value}
            out[key] = _merge(out.get(key, {}), _normalize(value, spec, sub, source))
            continue
        target = spec.alias or key
        if target in out:
            raise _err(source, sub, f"conflicts with '{_join(path, target)}'")
        out[target] = _coerce(spec, value, sub, source)
    return out


def _coerce(spec: _Leaf, value: Any, key: str, source: str) -> Any:
    try:
        return spec.coerce(value)
    except ConfigError:
        raise
    except _SubKeyError as e:
        sub = e.subpath if e.subpath.startswith("[") else "." + e.subpath
        raise _err(source, key + sub, e.problem) from e
    except (ValueError, TypeError) as e:
        raise _err(source, key, str(e)) from e


def _merge(base: dict[str, Any], upper: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of normalized trees; leaves (raw mappings and lists included) are replaced."""
    out = dict(base)
    for k, v in upper.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not isinstance(v, _Raw):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


class _Raw(dict):  # type: ignore[type-arg]
    """A mapping accepted as is (distribution sections we store but do not interpret)."""


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if isinstance(value, dict) and not isinstance(value, _Raw):
        node[path[-1]] = _merge(node.get(path[-1], {}), value)
    else:
        node[path[-1]] = value


def _subschema(schema: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = schema
    for part in path:
        node = node[part]
    return node


class _EnvIndex:
    """Environment variable names for every section and leaf of a schema.

    ``prefixes``: (``"REGISTRY_"``, subtree path) pairs, applied in order (later wins); within a
    prefix a section variable applies before its leaves. Variables starting with
    ``strict_prefix`` (and none of ``foreign_prefixes``) must be known.
    """

    def __init__(
        self,
        schema: Mapping[str, Any],
        prefixes: list[tuple[str, tuple[str, ...]]],
        *,
        strict_prefix: str,
        foreign_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.schema = schema
        self.strict_prefix = strict_prefix
        self.foreign_prefixes = foreign_prefixes
        entries: list[tuple[int, int, str, tuple[str, ...], Any]] = []
        for order, (prefix, base) in enumerate(prefixes):
            for rel, spec in self._walk(_subschema(schema, base), ()):
                name = prefix + "_".join(rel).upper()
                path = base + rel
                if isinstance(spec, _Leaf) and spec.alias:
                    path = (*path[:-1], spec.alias)
                entries.append((order, len(rel), name, path, spec))
        entries.sort(key=lambda e: (e[0], e[1]))
        self.entries = tuple((name, path, spec) for _, _, name, path, spec in entries)
        names = [e[0] for e in self.entries]
        assert len(names) == len(set(names)), "environment names collide"
        self.names = frozenset(names)

    def _walk(self, node: Any, rel: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
        out: list[tuple[tuple[str, ...], Any]] = [(rel, node)] if rel else []
        if isinstance(node, dict):
            for k, v in node.items():
                out.extend(self._walk(v, (*rel, k)))
        return out

    def layer(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """The environment's contribution as a normalized tree.

        Raises:
            ConfigError: an unknown strict-prefix variable, or a bad value.
        """
        for name in sorted(environ):
            if (
                name.startswith(self.strict_prefix)
                and name not in self.names
                and not name.startswith(self.foreign_prefixes)
            ):
                raise ConfigError(
                    f"environment variable {name}: unknown setting "
                    f"(known: {', '.join(sorted(n for n in self.names if n.startswith(self.strict_prefix)))})",
                    key=name,
                    source="environment",
                )
        tree: dict[str, Any] = {}
        for name, path, spec in self.entries:
            if name not in environ:
                continue
            raw = environ[name]
            source = f"environment variable {name}"
            dotted = ".".join(path)
            if isinstance(spec, dict) or spec.yaml_env:
                try:
                    value: Any = yaml.safe_load(raw) if raw.strip() else None
                except yaml.YAMLError as e:
                    raise _err(source, dotted, f"not valid YAML: {e}") from e
            else:
                value = raw
            if value is None or value == "":
                continue
            if isinstance(spec, dict):
                if isinstance(value, str) and isinstance(spec.get(value), dict):
                    value = {value: {}}  # REGISTRY_STORAGE=filesystem selects a driver
                elif isinstance(value, bool | str) and "enabled" in spec:
                    value = {"enabled": value}
                value = _normalize(value, spec, dotted, source)
            else:
                value = _coerce(spec, value, dotted, source)
            _set_path(tree, path, value)
        return tree


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"http.addr": x, "storage": {...}}`` -> nested dict; ``None`` values dropped."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        parts = tuple(str(key).split("."))
        if isinstance(value, Mapping) and not isinstance(value, _Raw):
            value = _nest(value)
        _set_path(out, parts, value)
    return out


def _read_file(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}", source=path) from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}", source=path) from e
    return {} if data is None else data


_Fixup = Callable[[dict[str, Any], str], dict[str, Any]]


def _load_layers(
    schema: Mapping[str, Any],
    env: _EnvIndex,
    path: str | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None,
    fixup: _Fixup | None = None,
) -> dict[str, Any]:
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        layers.append((path, _normalize(_read_file(path), schema, "", path)))
    layers.append(("environment", env.layer(environ)))
    if overrides:
        layers.append(("override", _normalize(_nest(overrides), schema, "", "override")))
    merged: dict[str, Any] = {}
    for source, layer in layers:
        merged = _merge(merged, fixup(layer, source) if fixup else layer)
    return merged


_Getter = Callable[..., Any]


def _getter(tree: Mapping[str, Any]) -> _Getter:
    def get(dotted: str, default: Any = None) -> Any:
        node: Any = tree
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    return get


def _frozen(value: Any) -> Any:
    """Read-only deep copy of plain YAML data (mappings -> MappingProxyType, lists -> tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


# ----------------------------------------------------------------------------- leaf coercers
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


def _str(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise ValueError(f"expected a string, got {_typename(v)}")
    return str(v)


def _path(v: Any) -> str:
    s = _str(v)
    if not s:
        raise ValueError("must not be empty")
    return os.path.expanduser(s)


def _existing_file(v: Any) -> str:
    p = _path(v)
    if not os.path.isfile(p):
        raise ValueError(f"file {p!r} does not exist")
    return p


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
        return v.strip().lower() in _TRUE
    raise ValueError(f"expected a boolean (true/false), got {v!r}")


def _int_at_least(minimum: int) -> Callable[[Any], int]:
    def coerce(v: Any) -> int:
        if isinstance(v, bool):
            raise ValueError(f"expected an integer, got {v!r}")
        try:
            n = int(v.strip()) if isinstance(v, str) else v
        except ValueError:
            raise ValueError(f"expected an integer, got {v!r}") from None
        if not isinstance(n, int):
            raise ValueError(f"expected an integer, got {v!r}")
        if n < minimum:
            raise ValueError(f"must be >= {minimum}, got {n}")
        return n

    return coerce


def _enum(*choices: str, aliases: Mapping[str, str] | None = None) -> Callable[[Any], str]:
    table = {c: c for c in choices} | dict(aliases or {})

    def coerce(v: Any) -> str:
        key = _str(v).strip().lower()
        if key not in table:
            raise ValueError(f"must be one of {', '.join(choices)}; got {v!r}")
        return table[key]

    return coerce


_level = _enum(
    "debug",
    "info",
    "warning",
    "error",
    aliases={"warn": "warning", "fatal": "error", "panic": "error", "critical": "error"},
)
_log_format = _enum("json", "text", aliases={"logstash": "json"})


def _version(v: Any) -> str:
    s = _str(v).strip()
    if s != "0.1":
        raise ValueError(f"unsupported version {s!r} (only '0.1')")
    return s


def _size(v: Any) -> int:
    return parse_size(v)


def _size_positive(v: Any) -> int:
    n = parse_size(v)
    if n <= 0:
        raise ValueError(f"size must be > 0, got {v!r}")
    return n


def _duration(v: Any) -> float:
    return parse_duration(v)


def _duration_positive(v: Any) -> float:
    d = parse_duration(v)
    if d <= 0:
        raise ValueError(f"must be > 0, got {v!r}")
    return d


def split_hostport(addr: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT``, ``:PORT`` for all interfaces); port 0..65535.

    Raises:
        ValueError: no port, a non-numeric or out-of-range port, or a bad IPv6 literal.
    """
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid address {addr!r}: expected HOST:PORT with a port 0-65535")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ValueError(f"invalid address {addr!r}: bad IPv6 literal")
        host = host[1:-1]
    elif ":" in host or any(c in host for c in "/@ ?#"):
        raise ValueError(f"invalid address {addr!r}: expected HOST:PORT")
    return host, int(port)


def _join_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _addr(v: Any) -> str:
    s = _str(v).strip()
    split_hostport(s)
    return s


def _url(v: Any) -> str:
    s = _str(v).strip()
    parts = urlsplit(s)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid URL {s!r}: expected http(s)://host[:port][/path]")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as e:
        raise ValueError(f"invalid URL {s!r}: {e}") from None
    return s.rstrip("/")


def _redis_url(v: Any) -> str:
    s = _str(v).strip()
    parts = urlsplit(s)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ValueError(
            "invalid Redis URL: expected redis://host:port[/db] or rediss:// or unix://"
        )
    return s


def _prefix(v: Any) -> str:
    s = _str(v).strip()
    if not s.startswith("/"):
        raise ValueError(f"must start with '/', got {s!r}")
    return s if s.endswith("/") else s + "/"


def _str_list(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        return tuple(p for p in v.replace(",", " ").split() if p)
    if isinstance(v, list | tuple):
        return tuple(_str(x) for x in v)
    raise ValueError(f"expected a list of strings, got {_typename(v)}")


def _headers(v: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(v, Mapping):
        raise ValueError(f"expected a mapping of header name to values, got {_typename(v)}")
    out: dict[str, tuple[str, ...]] = {}
    for k, vals in v.items():
        name = str(k)
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise _SubKeyError(name, "not a valid header name")
        seq = [vals] if isinstance(vals, str | int | float) else vals
        if not isinstance(seq, list | tuple) or any(isinstance(x, bool) for x in seq):
            raise _SubKeyError(name, "expected a string or a list of strings")
        cleaned = tuple(str(x) for x in seq)
        if any("\r" in x or "\n" in x for x in cleaned):
            raise _SubKeyError(name, "header values must not contain line breaks")
        out[name] = cleaned
    return out


def _raw(v: Any) -> _Raw:
    if not isinstance(v, Mapping):
        raise ValueError(f"expected a mapping, got {_typename(v)}")
    return _Raw(v)


def _any(v: Any) -> Any:
    return v


def _upstream_name(v: Any) -> str:
    s = _str(v).strip()
    if not _NAME_RE.match(s):
        raise ValueError(f"invalid upstream name {s!r}: use letters, digits, '.', '-', '_', ':'")
    return s


_STR = _Leaf(_str)
_BOOL = _Leaf(_bool)
_PATH = _Leaf(_path)
_DURATION = _Leaf(_duration)
_DURATION_POSITIVE = _Leaf(_duration_positive)
_RAW = _Leaf(_raw, yaml_env=True)
_ANY = _Leaf(_any, yaml_env=True)


# ----------------------------------------------------------------------------- shared parts
@dataclass(frozen=True)
class LogConfig:
    """``log.level`` is one of debug|info|warning|error; ``format`` json|text."""

    level: str = "info"
    format: str = "json"
    fields: Mapping[str, Any] = field(default_factory=_empty)
    accesslog_disabled: bool = False


@dataclass(frozen=True)
class LimitsConfig:
    """Byte limits; ``max_blob_bytes == 0`` means unlimited."""

    max_manifest_bytes: int = 4 * MiB
    max_blob_bytes: int = 0


# ----------------------------------------------------------------------------- origin
@dataclass(frozen=True)
class UploadPurgingConfig:
    enabled: bool = True
    age: float = 168 * 3600.0
    interval: float = 24 * 3600.0
    dryrun: bool = False


@dataclass(frozen=True)
class MaintenanceConfig:
    readonly: bool = False
    uploadpurging: UploadPurgingConfig = field(default_factory=UploadPurgingConfig)


@dataclass(frozen=True)
class StorageConfig:
    rootdirectory: str = "./data/origin"
    delete_enabled: bool = True
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    cache: Mapping[str, Any] = field(default_factory=_empty)
    redirect_disable: bool = False


@dataclass(frozen=True)
class TLSConfig:
    certificate: str | None = None
    key: str | None = None
    clientcas: tuple[str, ...] = ()
    minimumtls: str | None = None

    @property
    def enabled(self) -> bool:
        return self.certificate is not None


@dataclass(frozen=True)
class HTTPConfig:
    """``addr`` is ``HOST:PORT`` (``:5000`` = all interfaces); ``host`` the external base URL."""

    addr: str = "127.0.0.1:5000"
    host: str | None = None
    prefix: str = "/"
    secret: str | None = field(default=None, repr=False)
    relativeurls: bool = False
    draintimeout: float = 0.0
    tls: TLSConfig = field(default_factory=TLSConfig)
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=_empty)
    debug: Mapping[str, Any] = field(default_factory=_empty)

    @property
    def bind(self) -> tuple[str, int]:
        """(host, port) to bind; an empty host (``:5000``) becomes ``0.0.0.0``."""
        host, port = split_hostport(self.addr)
        return host or "0.0.0.0", port


@dataclass(frozen=True)
class HealthConfig:
    storagedriver_enabled: bool = False
    storagedriver_interval: float = 10.0
    storagedriver_threshold: int = 1
    extra: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True)
class OriginConfig:
    version: str = "0.1"
    log: LogConfig = field(default_factory=LogConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    auth: Mapping[str, Any] = field(default_factory=_empty)
    notifications: Mapping[str, Any] = field(default_factory=_empty, repr=False)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    metrics_enabled: bool = True

    @property
    def readonly(self) -> bool:
        return self.storage.maintenance.readonly


_LOG_SCHEMA: dict[str, Any] = {
    "level": _Leaf(_level),
    "format": _Leaf(_log_format),
    "formatter": _Leaf(_log_format, alias="format"),
    "fields": _RAW,
    "accesslog": {"disabled": _BOOL},
    "reportcaller": _BOOL,
    "hooks": _ANY,
}

ORIGIN_SCHEMA: dict[str, Any] = {
    "version": _Leaf(_version),
    "log": _LOG_SCHEMA,
    "storage": {
        "filesystem": {"rootdirectory": _PATH, "maxthreads": _Leaf(_int_at_least(1))},
        "delete": {"enabled": _BOOL},
        "maintenance": {
            "readonly": {"enabled": _BOOL},
            "uploadpurging": {
                "enabled": _BOOL,
                "age": _DURATION,
                "interval": _DURATION,
                "dryrun": _BOOL,
            },
        },
        "cache": _RAW,
        "redirect": {"disable": _BOOL},
    },
    "http": {
        "addr": _Leaf(_addr),
        "net": _Leaf(_enum("tcp")),
        "host": _Leaf(_url),
        "prefix": _Leaf(_prefix),
        "secret": _STR,
        "relativeurls": _BOOL,
        "draintimeout": _DURATION,
        "tls": {
            "certificate": _Leaf(_existing_file),
            "key": _Leaf(_existing_file),
            "clientcas": _Leaf(_str_list),
            "minimumtls": _STR,
        },
        "headers": _Leaf(_headers, yaml_env=True),
        "debug": _RAW,
        "http2": _RAW,
    },
    "health": {
        "storagedriver": {
            "enabled": _BOOL,
            "interval": _DURATION,
            "threshold": _Leaf(_int_at_least(1)),
        },
        "file": _ANY,
        "http": _ANY,
        "tcp": _ANY,
    },
    "auth": _RAW,
    "notifications": _RAW,
    "quayside": {
        "limits": {
            "max_manifest_bytes": _Leaf(_size_positive),
            "max_blob_bytes": _Leaf(_size),
        },
        "metrics": {"enabled": _BOOL},
    },
}

_ORIGIN_ENV = _EnvIndex(
    ORIGIN_SCHEMA,
    [("REGISTRY_", ()), ("QUAYSIDE_", ("quayside",))],
    strict_prefix="QUAYSIDE_",
    foreign_prefixes=("QUAYSIDE_EDGE_",),
)


def load_origin_config(
    path: str | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
) -> OriginConfig:
    """Load the origin's configuration: defaults < file ``path`` < ``environ`` < ``overrides``.

    Raises:
        ConfigError: unreadable or malformed file, unknown key (file, ``QUAYSIDE_*`` env or
            overrides), bad value, or inconsistent settings (TLS key without certificate).
    """
    m = _load_layers(ORIGIN_SCHEMA, _ORIGIN_ENV, path, environ, overrides)
    g = _getter(m)
    tls = TLSConfig(
        certificate=g("http.tls.certificate"),
        key=g("http.tls.key"),
        clientcas=tuple(g("http.tls.clientcas", ())),
        minimumtls=g("http.tls.minimumtls"),
    )
    if (tls.certificate is None) != (tls.key is None):
        raise ConfigError(
            "http.tls: 'certificate' and 'key' must be given together", key="http.tls.key"
        )
    health_extra = {k: v for k, v in g("health", {}).items() if k != "storagedriver"}
    return OriginConfig(
        version=g("version", "0.1"),
        log=_log_config(g),
        storage=StorageConfig(
            rootdirectory=g("storage.filesystem.rootdirectory", "./data/origin"),
            delete_enabled=g("storage.delete.enabled", True),
            maintenance=MaintenanceConfig(
                readonly=g("storage.maintenance.readonly.enabled", False),
                uploadpurging=UploadPurgingConfig(
                    enabled=g("storage.maintenance.uploadpurging.enabled", True),
                    age=g("storage.maintenance.uploadpurging.age", 168 * 3600.0),
                    interval=g("storage.maintenance.uploadpurging.interval", 24 * 3600.0),
                    dryrun=g("storage.maintenance.uploadpurging.dryrun", False),
                ),
            ),
            cache=_frozen(g("storage.cache", {})),
            redirect_disable=g("storage.redirect.disable", False),
        ),
        http=HTTPConfig(
            addr=g("http.addr", "127.0.0.1:5000"),
            host=g("http.host"),
            prefix=g("http.prefix", "/"),
            secret=g("http.secret"),
            relativeurls=g("http.relativeurls", False),
            draintimeout=g("http.draintimeout", 0.0),
            tls=tls,
            headers=MappingProxyType(dict(g("http.headers", {}))),
            debug=_frozen(g("http.debug", {})),
        ),
        health=HealthConfig(
            storagedriver_enabled=g("health.storagedriver.enabled", False),
            storagedriver_interval=g("health.storagedriver.interval", 10.0),
            storagedriver_threshold=g("health.storagedriver.threshold", 1),
            extra=_frozen(health_extra),
        ),
        auth=_frozen(g("auth", {})),
        notifications=_frozen(g("notifications", {})),
        limits=LimitsConfig(
            max_manifest_bytes=g("quayside.limits.max_manifest_bytes", 4 * MiB),
            max_blob_bytes=g("quayside.limits.max_blob_bytes", 0),
        ),
        metrics_enabled=g("quayside.metrics.enabled", True),
    )


def _log_config(g: _Getter) -> LogConfig:
    return LogConfig(
        level=g("log.level", "info"),
        format=g("log.format", "json"),
        fields=_frozen(g("log.fields", {})),
        accesslog_disabled=g("log.accesslog.disabled", False),
    )


# ----------------------------------------------------------------------------- edge
DOCKER_HUB_HOSTS = ("registry-1.docker.io", "docker.io", "index.docker.io")


@dataclass(frozen=True)
class UpstreamConfig:
    """One upstream registry.

    ``name`` is the ``?ns=`` value and path prefix that select it; ``hosts`` are further ns
    names (``match_names`` adds the URL's host[:port], and ``docker.io`` for Docker Hub).
    ``docker_hub`` left as ``None`` is decided from the URL host / name. ``url`` never carries
    credentials (they are moved to ``username``/``password``).
    """

    name: str
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    token_file: str | None = None
    hosts: tuple[str, ...] = ()
    docker_hub: bool | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retries: int = 3

    def __post_init__(self) -> None:
        if self.docker_hub is None:
            auto = self.name == "docker.io" or self.netloc in DOCKER_HUB_HOSTS
            object.__setattr__(self, "docker_hub", auto)

    @property
    def netloc(self) -> str:
        """``host[:port]`` of ``url``."""
        return urlsplit(self.url).netloc.rpartition("@")[2].lower()

    @property
    def match_names(self) -> tuple[str, ...]:
        """Every ``?ns=`` value that selects this upstream, ``name`` first, no duplicates."""
        names = [self.name, *self.hosts, self.netloc]
        if self.docker_hub:
            names.append("docker.io")
        return tuple(dict.fromkeys(names))

    def read_password(self) -> str | None:
        """``password``, else the stripped contents of ``password_file``, else ``None``.

        Raises:
            OSError: the file cannot be read (it existed when the config was loaded).
        """
        if self.password is not None:
            return self.password
        if self.password_file is not None:
            with open(self.password_file, encoding="utf-8") as f:
                return f.read().strip()
        return None

    def read_token(self) -> str | None:
        """Stripped contents of ``token_file`` (a ready Bearer token), or ``None``."""
        if self.token_file is None:
            return None
        with open(self.token_file, encoding="utf-8") as f:
            return f.read().strip()


@dataclass(frozen=True)
class EdgeCacheConfig:
    dir: str = "./data/edge"
    size: int = 10 * 1024**3


@dataclass(frozen=True)
class TagsConfig:
    """Tag->digest cache TTL and how long a revalidation may wait before serving the last known."""

    ttl: float = 60.0
    revalidate_timeout: float = 3.0


@dataclass(frozen=True)
class RedisConfig:
    url: str | None = field(default=None, repr=False)
    lock_ttl: float = 15.0

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def __repr__(self) -> str:
        shown = redact_url(self.url) if self.url else None
        return f"RedisConfig(url={shown!r}, lock_ttl={self.lock_ttl!r})"


@dataclass(frozen=True)
class EdgeConfig:
    """``advertise`` is ``None`` only when ``listen`` has port 0: set it once bound."""

    upstreams: tuple[UpstreamConfig, ...] = ()
    listen: str = "127.0.0.1:5001"
    advertise: str | None = "http://127.0.0.1:5001"
    default_upstream: str | None = None
    log: LogConfig = field(default_factory=LogConfig)
    cache: EdgeCacheConfig = field(default_factory=EdgeCacheConfig)
    tags: TagsConfig = field(default_factory=TagsConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    metrics_enabled: bool = True

    def upstream(self, name: str) -> UpstreamConfig:
        """The upstream called ``name``. Raises KeyError."""
        for u in self.upstreams:
            if u.name == name:
                return u
        raise KeyError(name)

    def upstream_for_ns(self, ns: str) -> UpstreamConfig | None:
        """The upstream whose ``match_names`` contains ``ns`` (case-insensitive), or ``None``."""
        ns = ns.lower()
        for u in self.upstreams:
            if ns in (n.lower() for n in u.match_names):
                return u
        return None

    def default(self) -> UpstreamConfig:
        """The default upstream (``default_upstream``, else the first). Raises KeyError if none."""
        if self.default_upstream is not None:
            return self.upstream(self.default_upstream)
        if not self.upstreams:
            raise KeyError("no upstream configured")
        return self.upstreams[0]

    @property
    def bind(self) -> tuple[str, int]:
        host, port = split_hostport(self.listen)
        return host or "0.0.0.0", port


UPSTREAM_SCHEMA: dict[str, Any] = {
    "name": _Leaf(_upstream_name),
    "url": _Leaf(_url),
    "username": _STR,
    "password": _STR,
    "password_file": _Leaf(_existing_file),
    "token_file": _Leaf(_existing_file),
    "hosts": _Leaf(_str_list),
    "docker_hub": _BOOL,
    "timeouts": {"connect": _DURATION_POSITIVE, "read": _DURATION_POSITIVE},
    "retries": _Leaf(_int_at_least(0)),
}


def _upstream_from_mapping(data: Mapping[str, Any], name: str | None, where: str) -> UpstreamConfig:
    try:
        d = _normalize(data, UPSTREAM_SCHEMA, "", "upstream")
    except ConfigError as e:
        raise _SubKeyError(e.key or "?", e.problem) from e
    if name is not None:
        if "name" in d and d["name"] != name:
            raise _SubKeyError("name", f"{d['name']!r} differs from the mapping key {name!r}")
        d["name"] = name
    if "url" not in d:
        raise _SubKeyError("url", "required")
    url, user, password = _split_credentials(d["url"])
    if user is not None:
        if "username" in d or "password" in d:
            raise _SubKeyError("url", "credentials both in the URL and in username/password")
        d["username"], d["password"] = user, password
    if "password" in d and "password_file" in d:
        raise _SubKeyError("password_file", "give either 'password' or 'password_file'")
    timeouts = d.get("timeouts", {})
    return UpstreamConfig(
        name=d.get("name") or _derive_name(url),
        url=url,
        username=d.get("username"),
        password=d.get("password"),
        password_file=d.get("password_file"),
        token_file=d.get("token_file"),
        hosts=tuple(h.lower() for h in d.get("hosts", ())),
        docker_hub=d.get("docker_hub"),
        connect_timeout=timeouts.get("connect", 5.0),
        read_timeout=timeouts.get("read", 30.0),
        retries=d.get("retries", 3),
    )


def _split_credentials(url: str) -> tuple[str, str | None, str | None]:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url.rstrip("/"), None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, hostport, parts.path, parts.query, ""))
    return clean.rstrip("/"), user or None, password or None


def _derive_name(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2].lower()


def parse_upstream_arg(s: str) -> UpstreamConfig:
    """Parse a CLI ``--upstream`` value: ``URL`` or ``NAME=URL``.

    Without a name, the name is the URL's ``host[:port]``. Credentials in the URL
    (``https://user:pass@host``) are moved to ``username``/``password``.

    Raises:
        ConfigError: empty name, bad name, or a URL that is not http(s)://host[:port].
    """
    try:
        return _parse_upstream(s)
    except ValueError as e:
        raise ConfigError(
            f"--upstream {s!r}: {e}", key="upstreams", source="--upstream", problem=str(e)
        ) from e


def _parse_upstream(s: str) -> UpstreamConfig:
    text = s.strip()
    name: str | None = None
    head, sep, tail = text.partition("=")
    if sep and "://" not in head and "/" not in head:
        name, text = _upstream_name(head), tail.strip()
    return _upstream_from_mapping({"url": _url(text)}, name, "--upstream")


def _upstreams(value: Any) -> tuple[UpstreamConfig, ...]:
    """Coerce a list (mappings, ``NAME=URL`` strings, UpstreamConfig) or a name->entry mapping."""
    if isinstance(value, str):
        stripped = value.strip()
        value = (
            yaml.safe_load(stripped)
            if stripped[:1] in ("[", "{")
            else [p for p in stripped.replace(",", " ").split() if p]
        )
    items: list[tuple[str, str | None, Any]] = []
    if isinstance(value, Mapping):
        items = [(str(k), str(k), v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        items = [(f"[{i}]", None, v) for i, v in enumerate(value)]
    else:
        raise ValueError("expected a list or a mapping of upstreams")
    out: list[UpstreamConfig] = []
    for where, name, entry in items:
        try:
            if isinstance(entry, UpstreamConfig):
                out.append(entry)
            elif isinstance(entry, str):
                out.append(_parse_upstream(entry if name is None else f"{name}={entry}"))
            elif isinstance(entry, Mapping):
                out.append(_upstream_from_mapping(entry, name, where))
            else:
                raise ValueError("expected a mapping or a 'NAME=URL' string")
        except _SubKeyError as e:
            raise _SubKeyError(f"{where}.{e.subpath}".replace(".[", "["), e.problem) from e
        except ValueError as e:
            raise _SubKeyError(where, str(e)) from e
    return tuple(out)


EDGE_SCHEMA: dict[str, Any] = {
    "listen": _Leaf(_addr),
    "advertise": _Leaf(_url),
    "log": _LOG_SCHEMA,
    "cache": {"dir": _PATH, "size": _Leaf(_size_positive), "manifest_ttl": _DURATION},
    "tags": {"ttl": _DURATION, "revalidate_timeout": _DURATION_POSITIVE},
    "redis": {"url": _Leaf(_redis_url), "lock_ttl": _DURATION_POSITIVE},
    "upstreams": _Leaf(_upstreams, yaml_env=False),
    "default_upstream": _STR,
    "limits": {
        "max_manifest_bytes": _Leaf(_size_positive),
        "max_blob_bytes": _Leaf(_size),
    },
    "metrics": {"enabled": _BOOL},
}

_EDGE_ENV = _EnvIndex(EDGE_SCHEMA, [("QUAYSIDE_EDGE_", ())], strict_prefix="QUAYSIDE_EDGE_")


def _edge_layer_fixup(layer: dict[str, Any], source: str) -> dict[str, Any]:
    """``cache.manifest_ttl`` is an alias of ``tags.ttl``, resolved within each source."""
    cache = layer.get("cache", {})
    if "manifest_ttl" in cache:
        ttl = cache.pop("manifest_ttl")
        tags = layer.setdefault("tags", {})
        if "ttl" in tags and tags["ttl"] != ttl:
            raise ConfigError(
                f"{source}: cache.manifest_ttl: conflicts with 'tags.ttl'", key="cache.manifest_ttl"
            )
        tags["ttl"] = ttl
    return layer


def load_edge_config(
    path: str | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
) -> EdgeConfig:
    """Load the edge's configuration: defaults < file ``path`` < ``environ`` < ``overrides``.

    ``overrides["upstreams"]`` may be a list of ``--upstream`` strings or UpstreamConfig.

    Raises:
        ConfigError: unknown key, bad value, no upstream, duplicate upstream names or ns
            names, or a ``default_upstream`` that names no upstream.
    """
    m = _load_layers(EDGE_SCHEMA, _EDGE_ENV, path, environ, overrides, fixup=_edge_layer_fixup)
    g = _getter(m)
    upstreams: tuple[UpstreamConfig, ...] = g("upstreams", ())
    if not upstreams:
        raise ConfigError(
            "upstreams: at least one upstream is required (--upstream URL or 'upstreams:')",
            key="upstreams",
        )
    names = [u.name for u in upstreams]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"upstreams: duplicate name {dup!r}", key="upstreams")
    seen: dict[str, str] = {}
    for u in upstreams:
        for n in u.match_names:
            owner = seen.setdefault(n.lower(), u.name)
            if owner != u.name:
                raise ConfigError(
                    f"upstreams: {n!r} selects both {owner!r} and {u.name!r}", key="upstreams"
                )
    default = g("default_upstream")
    if default is not None and default not in {u.name for u in upstreams}:
        raise ConfigError(
            f"default_upstream: {default!r} is not the name of a configured upstream",
            key="default_upstream",
        )
    listen = g("listen", "127.0.0.1:5001")
    advertise = g("advertise")
    if advertise is None:
        host, port = split_hostport(listen)
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        advertise = None if port == 0 else f"http://{_join_hostport(host, port)}"
    return EdgeConfig(
        upstreams=upstreams,
        listen=listen,
        advertise=advertise,
        default_upstream=default,
        log=_log_config(g),
        cache=EdgeCacheConfig(
            dir=g("cache.dir", "./data/edge"), size=g("cache.size", 10 * 1024**3)
        ),
        tags=TagsConfig(
            ttl=g("tags.ttl", 60.0), revalidate_timeout=g("tags.revalidate_timeout", 3.0)
        ),
        redis=RedisConfig(url=g("redis.url"), lock_ttl=g("redis.lock_ttl", 15.0)),
        limits=LimitsConfig(
            max_manifest_bytes=g("limits.max_manifest_bytes", 4 * MiB),
            max_blob_bytes=g("limits.max_blob_bytes", 0),
        ),
        metrics_enabled=g("metrics.enabled", True),
    )
