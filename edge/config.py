"""The edge's configuration: :class:`EdgeConfig` and :func:`load_edge_config`.

Edge files use our own schema (:data:`EDGE_SCHEMA`); environment ``QUAYSIDE_EDGE_`` + path
(``QUAYSIDE_EDGE_CACHE_SIZE``,
``QUAYSIDE_EDGE_UPSTREAMS="docker.io=https://registry-1.docker.io,http://127.0.0.1:5000"``).
An ``upstreams`` value from a higher source replaces the whole list; ``cache.manifest_ttl`` is
an alias of ``tags.ttl``. ``metrics.enabled: false`` serves no ``/metrics``; ``metrics.listen``
serves them (at ``metrics.path``) on a listener of their own instead of on ``listen``.
``limits.max_blob_bytes`` takes only 0 (unlimited). Upstream entries are parsed by
:mod:`edge.upstreamconfig`. The schema machinery and the value coercers are regcore's (:mod:`regcore.configschema`,
:mod:`regcore.configvalues`), shared with the origin's :mod:`regcore.config`.

Guarantees: as :mod:`regcore.config`'s (every failure is a ``ConfigError`` naming source and key;
the Redis URL's password never appears in ``repr()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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
    as_existing_file,
    as_positive_size,
    as_size,
    as_str,
    as_str_list,
    as_url,
    join_hostport,
    log_config,
    one_of,
    split_hostport,
)
from regcore.logging import redact_url
from regcore.policyconfig import EDGE_POLICIES_SCHEMA, PoliciesConfig, policies_config

__all__ = [
    "EDGE_SCHEMA",
    "EdgeAuthConfig",
    "EdgeCacheConfig",
    "EdgeConfig",
    "EdgeTLSConfig",
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
class EdgeAuthConfig:
    """Client authentication on the edge itself (``auth.htpasswd``): callers of upstreams
    that are neither ``private`` nor in token mode must sign in with a bcrypt htpasswd user.
    ``htpasswd_path`` None: off (anyone who reaches the edge may pull)."""

    htpasswd_path: str | None = None
    realm: str = "quayside-edge"


@dataclass(frozen=True)
class EdgeTLSConfig:
    """``tls``: the listener serves HTTPS with ``certificate``/``key`` (None: plain HTTP).
    ``clientcas``: the peer endpoint then requires a client certificate signed by one of these
    CAs; ``peer_certificate``/``peer_key`` are what this node presents to other nodes, and
    ``peer_cas`` what their server certificates are verified against (default: ``clientcas``)."""

    certificate: str | None = None
    key: str | None = None
    minimumtls: str = "tls1.2"
    clientcas: tuple[str, ...] = ()
    peer_certificate: str | None = None
    peer_key: str | None = None
    peer_cas: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.certificate is not None


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


def as_existing_files(v: Any) -> tuple[str, ...]:
    """A list of existing files (one path is a list of one)."""
    return tuple(as_existing_file(p) for p in as_str_list(v))


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
    "auth": {"htpasswd": {"realm": STR, "path": Leaf(as_existing_file)}},
    "tls": {
        "certificate": Leaf(as_existing_file),
        "key": Leaf(as_existing_file),
        "minimumtls": Leaf(one_of("tls1.2", "tls1.3")),
        "clientcas": Leaf(as_existing_files),
        "peer": {
            "certificate": Leaf(as_existing_file),
            "key": Leaf(as_existing_file),
            "cas": Leaf(as_existing_files),
        },
    },
    "policies": EDGE_POLICIES_SCHEMA,
}


def _edge_tls(g: Any) -> EdgeTLSConfig:
    """``tls`` checked: certificate and key together, a peer identity when peers must show
    one. Raises ConfigError naming the key."""
    tls = EdgeTLSConfig(
        certificate=g("tls.certificate"),
        key=g("tls.key"),
        minimumtls=g("tls.minimumtls", "tls1.2"),
        clientcas=tuple(g("tls.clientcas", ())),
        peer_certificate=g("tls.peer.certificate"),
        peer_key=g("tls.peer.key"),
        peer_cas=tuple(g("tls.peer.cas", ())) or tuple(g("tls.clientcas", ())),
    )
    if (tls.certificate is None) != (tls.key is None):
        raise ConfigError(
            "tls.key: 'tls.certificate' and 'tls.key' must be given together", key="tls.key"
        )
    if (tls.peer_certificate is None) != (tls.peer_key is None):
        raise ConfigError(
            "tls.peer.key: 'tls.peer.certificate' and 'tls.peer.key' must be given together",
            key="tls.peer.key",
        )
    if tls.clientcas and not tls.enabled:
        raise ConfigError(
            "tls.clientcas: client certificates need 'tls.certificate' and 'tls.key'",
            key="tls.clientcas",
        )
    if tls.clientcas and tls.peer_certificate is None:
        raise ConfigError(
            "tls.peer.certificate: required with 'tls.clientcas' (nodes of the region show "
            "a client certificate to each other's peer endpoint)",
            key="tls.peer.certificate",
        )
    return tls


def _edge_auth(g: Any, upstreams: tuple[UpstreamConfig, ...]) -> EdgeAuthConfig:
    """``auth.htpasswd`` checked (bcrypt entries only, line named). Raises ConfigError."""
    path = g("auth.htpasswd.path")
    if g("auth.htpasswd") is not None and path is None:
        raise ConfigError("auth.htpasswd.path: required", key="auth.htpasswd.path")
    if path is None:
        return EdgeAuthConfig()
    from regcore.auth.htpasswd import HtpasswdError, read_entries

    try:
        read_entries(path)
    except (HtpasswdError, OSError) as exc:
        raise ConfigError(f"auth.htpasswd.path: {exc}", key="auth.htpasswd.path") from None
    if all(u.private or u.auth is not None for u in upstreams):
        raise ConfigError(
            "auth.htpasswd: every upstream is private or in token mode; edge users would "
            "guard nothing",
            key="auth.htpasswd",
        )
    return EdgeAuthConfig(htpasswd_path=path, realm=g("auth.htpasswd.realm", "quayside-edge"))


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
    tls = _edge_tls(g)
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
        auth=_edge_auth(g, upstreams),
        tls=tls,
        policies=policies_config(g, "policies"),
    )
