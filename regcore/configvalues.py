"""What a configuration key may hold: leaf coercers for schemas, and the sections both the origin
and the edge have (``log``, limits).

A coercer takes a raw value from YAML, the environment (always a string) or an override, and
returns the normalized value or raises ``ValueError`` (or :class:`~regcore.configschema.SubKeyError`
for a problem below the key); :mod:`regcore.configschema` turns that into a ``ConfigError``
naming the key. Ready leaves: :data:`STR`, :data:`BOOL`, :data:`PATH`, :data:`DURATION`,
:data:`DURATION_POSITIVE`, :data:`RAW`, :data:`ANY`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from regcore.configschema import Getter, Leaf, Raw, empty_mapping, frozen, typename
from regcore.sizes import parse_duration, parse_size

__all__ = [
    "ANY",
    "BOOL",
    "DURATION",
    "DURATION_POSITIVE",
    "LOG_SCHEMA",
    "PATH",
    "RAW",
    "STR",
    "LimitsConfig",
    "LogConfig",
    "MiB",
    "as_addr",
    "as_existing_file",
    "as_positive_size",
    "as_size",
    "as_str",
    "as_str_list",
    "as_url",
    "int_at_least",
    "join_hostport",
    "log_config",
    "one_of",
    "split_hostport",
]

MiB = 1024 * 1024


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def as_str(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise ValueError(f"expected a string, got {typename(v)}")
    return str(v)


def _path(v: Any) -> str:
    s = as_str(v)
    if not s:
        raise ValueError("must not be empty")
    return os.path.expanduser(s)


def as_existing_file(v: Any) -> str:
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


def int_at_least(minimum: int) -> Callable[[Any], int]:
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


def one_of(*choices: str, aliases: Mapping[str, str] | None = None) -> Callable[[Any], str]:
    table = {c: c for c in choices} | dict(aliases or {})

    def coerce(v: Any) -> str:
        key = as_str(v).strip().lower()
        if key not in table:
            raise ValueError(f"must be one of {', '.join(choices)}; got {v!r}")
        return table[key]

    return coerce


_level = one_of(
    "debug",
    "info",
    "warning",
    "error",
    aliases={"warn": "warning", "fatal": "error", "panic": "error", "critical": "error"},
)
_json_or_text = one_of("json", "text")


def _log_format(v: Any) -> str:
    if as_str(v).strip().lower() == "logstash":
        raise ValueError(
            "'logstash' is not supported by Quayside (its JSON lines have other field names: "
            "use json)"
        )
    return _json_or_text(v)


def _no_hooks(v: Any) -> Any:
    raise ValueError("not supported by Quayside (no log hooks: ship the JSON log from stdout)")


def as_size(v: Any) -> int:
    return parse_size(v)


def as_positive_size(v: Any) -> int:
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


def join_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def as_addr(v: Any) -> str:
    s = as_str(v).strip()
    split_hostport(s)
    return s


def as_url(v: Any) -> str:
    s = as_str(v).strip()
    parts = urlsplit(s)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid URL {s!r}: expected http(s)://host[:port][/path]")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as e:
        raise ValueError(f"invalid URL {s!r}: {e}") from None
    return s.rstrip("/")


def as_str_list(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        return tuple(p for p in v.replace(",", " ").split() if p)
    if isinstance(v, list | tuple):
        return tuple(as_str(x) for x in v)
    raise ValueError(f"expected a list of strings, got {typename(v)}")


def _raw(v: Any) -> Raw:
    if not isinstance(v, Mapping):
        raise ValueError(f"expected a mapping, got {typename(v)}")
    return Raw(v)


def _any(v: Any) -> Any:
    return v


STR = Leaf(as_str)
BOOL = Leaf(_bool)
PATH = Leaf(_path)
DURATION = Leaf(_duration)
DURATION_POSITIVE = Leaf(_duration_positive)
RAW = Leaf(_raw, yaml_env=True)
ANY = Leaf(_any, yaml_env=True)


# ----------------------------------------------------------------------------- shared sections
@dataclass(frozen=True)
class LogConfig:
    """``log.level`` is one of debug|info|warning|error; ``format`` json|text; ``fields`` are
    added to every line and ``reportcaller`` adds the calling ``file`` and ``func``
    (:func:`regcore.logging.setup_logging`)."""

    level: str = "info"
    format: str = "json"
    fields: Mapping[str, Any] = field(default_factory=empty_mapping)
    accesslog_disabled: bool = False
    reportcaller: bool = False


@dataclass(frozen=True)
class LimitsConfig:
    """Byte limits; ``max_blob_bytes == 0`` means unlimited."""

    max_manifest_bytes: int = 4 * MiB
    max_blob_bytes: int = 0


LOG_SCHEMA: dict[str, Any] = {
    "level": Leaf(_level),
    "format": Leaf(_log_format),
    "formatter": Leaf(_log_format, alias="format"),
    "fields": RAW,
    "accesslog": {"disabled": BOOL},
    "reportcaller": BOOL,
    "hooks": Leaf(_no_hooks, yaml_env=True),
}


def log_config(g: Getter) -> LogConfig:
    """The ``log`` section of a merged tree read through ``g``."""
    return LogConfig(
        level=g("log.level", "info"),
        format=g("log.format", "json"),
        fields=frozen(g("log.fields", {})),
        accesslog_disabled=g("log.accesslog.disabled", False),
        reportcaller=g("log.reportcaller", False),
    )
