"""The edge's configuration: :class:`EdgeConfig` and :func:`load_edge_config`.

Edge files use our own schema (:data:`EDGE_SCHEMA`); environment ``QUAYSIDE_EDGE_`` + path
(``QUAYSIDE_EDGE_CACHE_SIZE``,
``QUAYSIDE_EDGE_UPSTREAMS="docker.io=https://registry-1.docker.io,http://127.0.0.1:5000"``).
An ``upstreams`` value from a higher source replaces the whole list; ``cache.manifest_ttl`` is
an alias of ``tags.ttl``. ``metrics.enabled: false`` serves no ``/metrics``; ``metrics.listen``
serves them (at ``metrics.path``) on a listener of their own instead of on ``listen``.
``limits.max_blob_bytes`` takes only 0 (unlimited). Upstream entries are parsed by
:mod:`edge.upstreamconfig`; the ``auth`` and ``tls`` sections by :mod:`edge.accessconfig`. The
schema machinery and the value coercers are regcore's (:mod:`regcore.configschema`,
:mod:`regcore.configvalues`), shared with the origin's :mod:`regcore.config`.

Guarantees: as :mod:`regcore.config`'s (every failure is a ``ConfigError`` naming source and key;
the Redis URL's password never appears in ``repr()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from edge.accessconfig import (
    EDGE_AUTH_SCHEMA,
    EDGE_TLS_SCHEMA,
    EdgeAuthConfig,
    EdgeTLSConfig,
    edge_auth_config,
    edge_tls_config,
)
from edge.upstreamconfig import UpstreamConfig, as_upstreams
from regcore.configdist import as_metrics_path
from regcore.configschema import ConfigError, EnvIndex, Leaf, getter, load_layers
from regcore.configvalues import (
    BOOL,
    DURATION,
    DURATION_POSITIVE,
    LOG_SCHEMA,
    PATH,
    STR,
    LimitsConfig,
    LogConfig,
    MiB,
    as_addr,
    as_positive_size,
    as_size,
    as_str,
    as_url,
    join_hostport,
    log_config,
    split_hostport,
)
from regcore.policyconfig import EDGE_POLICIES_SCHEMA, PoliciesConfig, policies_config
from regcore.redaction import redact_url

__all__ = [
    "EDGE_SCHEMA",
    "EdgeCacheConfig",
    "EdgeConfig",
    "RedisConfig",
    "TagsConfig",
    "load_edge_config",
]


@dataclass(frozen=True)
class EdgeCacheConfig:
    dir: str = "./data/edge"
    size: int = 10 * 1024**3
    direct_io: bool = True  # fills write with O_DIRECT where the filesystem allows it


@dataclass(frozen=True)
class TagsConfig:
    """Tag->digest cache TTL and how long a revalidation may wait before serving the last known."""

    ttl: float = 60.0
    revalidate_timeout: float = 3.0


@dataclass(frozen=True)
class RedisConfig:
    url: str | None = field(default=None, repr=False)
    lock_ttl: float = 15.0
    # Shared secret nodes of a region present on the peer endpoint. Unset: agreed through Redis.
    peer_token: str | None = field(default=None, repr=False)

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
    metrics_listen: str | None = None  # metrics on this HOST:PORT instead of on ``listen``
    metrics_path: str = "/metrics"
    auth: EdgeAuthConfig = field(default_factory=EdgeAuthConfig)
    tls: EdgeTLSConfig = field(default_factory=EdgeTLSConfig)
    policies: PoliciesConfig = field(default_factory=PoliciesConfig)

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

    @property
    def metrics_on_main_port(self) -> bool:
        """``/metrics`` on ``listen``: metrics on and no ``metrics.listen`` of their own."""
        return self.metrics_enabled and self.metrics_listen is None

    @property
    def metrics_bind(self) -> tuple[str, int]:
        """(host, port) of ``metrics.listen``. Raises ValueError when it is not set."""
        if self.metrics_listen is None:
            raise ValueError("no metrics.listen")
        host, port = split_hostport(self.metrics_listen)
        return host or "0.0.0.0", port


def _redis_url(v: Any) -> str:
    s = as_str(v).strip()
    parts = urlsplit(s)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ValueError(
            "invalid Redis URL: expected redis://host:port[/db] or rediss:// or unix://"
        )
    return s


def _no_blob_limit(v: Any) -> int:
    if as_size(v) != 0:
        raise ValueError(
            "a blob size limit is not supported by Quayside on the edge (it serves what its "
            "upstream serves; set the limit on the origin, quayside.limits.max_blob_bytes)"
        )
    return 0


EDGE_SCHEMA: dict[str, Any] = {
    "listen": Leaf(as_addr),
    "advertise": Leaf(as_url),
    "log": LOG_SCHEMA,
    "cache": {
        "dir": PATH,
        "size": Leaf(as_positive_size),
        "manifest_ttl": DURATION,
        "direct_io": BOOL,
    },
    "tags": {"ttl": DURATION, "revalidate_timeout": DURATION_POSITIVE},
    "redis": {"url": Leaf(_redis_url), "lock_ttl": DURATION_POSITIVE, "peer_token": STR},
    "upstreams": Leaf(as_upstreams, yaml_env=False),
    "default_upstream": STR,
    "limits": {
        "max_manifest_bytes": Leaf(as_positive_size),
        "max_blob_bytes": Leaf(_no_blob_limit),
    },
    "metrics": {"enabled": BOOL, "listen": Leaf(as_addr), "path": Leaf(as_metrics_path)},
    "auth": EDGE_AUTH_SCHEMA,
    "tls": EDGE_TLS_SCHEMA,
    "policies": EDGE_POLICIES_SCHEMA,
}


_EDGE_ENV = EnvIndex(EDGE_SCHEMA, [("QUAYSIDE_EDGE_", ())], strict_prefix="QUAYSIDE_EDGE_")


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
    m = load_layers(EDGE_SCHEMA, _EDGE_ENV, path, environ, overrides, fixup=_edge_layer_fixup)
    g = getter(m)
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
    metrics_enabled = g("metrics.enabled", True)
    metrics_listen = g("metrics.listen")
    if metrics_listen is not None and not metrics_enabled:
        raise ConfigError(
            "metrics.listen: conflicts with metrics.enabled: false", key="metrics.listen"
        )
    tls = edge_tls_config(g)
    if advertise is None:
        host, port = split_hostport(listen)
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        scheme = "https" if tls.enabled else "http"
        advertise = None if port == 0 else f"{scheme}://{join_hostport(host, port)}"
    return EdgeConfig(
        upstreams=upstreams,
        listen=listen,
        advertise=advertise,
        default_upstream=default,
        log=log_config(g),
        cache=EdgeCacheConfig(
            dir=g("cache.dir", "./data/edge"),
            size=g("cache.size", 10 * 1024**3),
            direct_io=g("cache.direct_io", True),
        ),
        tags=TagsConfig(
            ttl=g("tags.ttl", 60.0), revalidate_timeout=g("tags.revalidate_timeout", 3.0)
        ),
        redis=RedisConfig(
            url=g("redis.url"), lock_ttl=g("redis.lock_ttl", 15.0), peer_token=g("redis.peer_token")
        ),
        limits=LimitsConfig(
            max_manifest_bytes=g("limits.max_manifest_bytes", 4 * MiB),
            max_blob_bytes=g("limits.max_blob_bytes", 0),
        ),
        metrics_enabled=metrics_enabled,
        metrics_listen=metrics_listen,
        metrics_path=g("metrics.path", "/metrics"),
        auth=edge_auth_config(g, upstreams),
        tls=tls,
        policies=policies_config(g, "policies"),
    )
