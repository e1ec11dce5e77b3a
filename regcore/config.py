"""The origin's configuration: frozen dataclasses, loaded and validated in one place.

Sources, lowest to highest precedence: built-in defaults < YAML file < environment < overrides
(the CLI). Every source is an argument, so tests pass dicts instead of patching the process::

    cfg = load_origin_config("config.yml", os.environ, {"http.addr": args.listen})

The edge's configuration (:mod:`edge.config`) is loaded the same way, on the same machinery.

Origin files use distribution's ``config.yml`` schema where it overlaps (``version``, ``log``,
``storage.filesystem``, ``storage.delete``, ``storage.maintenance``, ``storage.cache``, ``http``,
``health``, ``auth``) plus our own ``quayside:`` section. Every key accepted does what it says:
the keys and values Quayside implements only in part (``storage.cache``, ``http.prefix``,
``http.debug``, ``health.file``...) are listed, with the reason, in :mod:`regcore.configdist`;
the rest stop start-up. ``auth`` and ``quayside.auth``/``audit``
are parsed by :mod:`regcore.auth.config`; ``notifications`` and ``quayside.notifications``/
``replication`` by :mod:`regcore.eventsconfig`; deletes are off unless
``storage.delete.enabled``, as in registry:2. Environment:
``REGISTRY_`` + the path upper-cased and joined by ``_`` (``REGISTRY_HTTP_ADDR``,
``REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED``); a name that is a section takes a YAML value
(``REGISTRY_STORAGE_MAINTENANCE_READONLY='{enabled: true}'``); ``quayside.*`` keys also as
``QUAYSIDE_LIMITS_MAX_MANIFEST_BYTES``. Unknown ``REGISTRY_*`` variables are ignored (other tools
set them); an unknown ``QUAYSIDE_*`` variable is an error (``QUAYSIDE_EDGE_*`` belongs to the edge).

Overrides: a dict whose keys are dotted paths or nested dicts; ``None`` values mean "not given".

Modules: this one holds the origin's sections and entry point; :mod:`regcore.configvalues`
(leaf coercers, ``log`` and limits sections) and :mod:`regcore.configschema` (schema checking,
environment names, layering, ``ConfigError``) are the machinery both servers share. The edge's
own schema lives with the edge (:mod:`edge.config`, :mod:`edge.upstreamconfig`).

Guarantees: every failure raises :class:`ConfigError` naming the source and the dotted key
(``config.yml: unknown key 'storage.filesystem.rootdir'``); secrets (passwords, ``http.secret``,
Redis URLs, notification endpoints) never appear in ``repr()``.

Why not pydantic(-settings): a spike (issue 7) ported the origin's loader to pydantic v2 and
passed this module's origin tests, but its 390 lines (135 of file-shaped models, 120 of error
translation, environment naming and merging, 91 of conversion) replaced only 125 here (the
schema and ``load_origin_config``): every coercer of :mod:`.configvalues` stays (distribution's
sizes, durations, booleans and messages), and so do the frozen dataclasses callers read (the
models must mirror the file for ``extra="forbid"`` to name dotted keys). pydantic-settings'
environment source cannot express distribution's names: ``_`` is both the nesting delimiter
and part of keys (``max_manifest_bytes``), and section variables hold YAML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from regcore.auth.config import (
    AUDIT_SCHEMA,
    AUTH_SCHEMA,
    QUAYSIDE_AUTH_SCHEMA,
    AuthConfig,
    auth_config,
)
from regcore.configdist import (
    DEBUG_SCHEMA,
    HEALTH_REFUSED,
    STORAGE_CACHE_SCHEMA,
    DebugConfig,
    as_http2_disabled,
    as_minimumtls,
    as_prefix,
    debug_config,
    refuse,
)
from regcore.configschema import (
    ConfigError,
    EnvIndex,
    Leaf,
    SubKeyError,
    empty_mapping,
    frozen,
    getter,
    load_layers,
    typename,
)
from regcore.configvalues import (
    BOOL,
    DURATION,
    DURATION_POSITIVE,
    LOG_SCHEMA,
    PATH,
    STR,
    LimitsConfig,
    LogConfig,
    as_addr,
    as_existing_file,
    as_positive_size,
    as_size,
    as_str,
    as_str_list,
    as_url,
    int_at_least,
    log_config,
    one_of,
    split_hostport,
)
from regcore.configvalues import MiB as MiB
from regcore.eventsconfig import (
    NOTIFICATIONS_SCHEMA,
    QUAYSIDE_NOTIFICATIONS_SCHEMA,
    REPLICATION_SCHEMA,
    NotificationsConfig,
    ReplicationConfig,
    notifications_config,
    replication_config,
)
from regcore.opsconfig import OPS_SCHEMA, OpsConfig, ops_config
from regcore.policyconfig import POLICIES_SCHEMA, PoliciesConfig, policies_config

__all__ = [
    "ConfigError",
    "DebugConfig",
    "HTTPConfig",
    "HealthConfig",
    "LimitsConfig",
    "LogConfig",
    "MaintenanceConfig",
    "OriginConfig",
    "StorageConfig",
    "TLSConfig",
    "UploadPurgingConfig",
    "load_origin_config",
    "split_hostport",
]


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
    delete_enabled: bool = False
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    cache: Mapping[str, Any] = field(default_factory=empty_mapping)  # see regcore.configdist
    redirect_disable: bool = False  # accepted either way: filesystem blobs are never redirected


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
    """``addr`` is ``HOST:PORT`` (``:5000`` = all interfaces); ``host`` the external base URL.

    ``relativeurls``: ``True`` Location headers are paths; ``False`` absolute (under ``host``,
    else the request's scheme and Host); ``None`` (not set) absolute under ``host`` when set,
    else paths. ``headers`` are added to every answer that does not set them itself."""

    addr: str = "127.0.0.1:5000"
    host: str | None = None
    prefix: str = "/"
    secret: str | None = field(default=None, repr=False)
    relativeurls: bool | None = None
    draintimeout: float = 0.0
    tls: TLSConfig = field(default_factory=TLSConfig)
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=empty_mapping)
    debug: DebugConfig = field(default_factory=DebugConfig)

    @property
    def bind(self) -> tuple[str, int]:
        """(host, port) to bind; an empty host (``:5000``) becomes ``0.0.0.0``."""
        host, port = split_hostport(self.addr)
        return host or "0.0.0.0", port


@dataclass(frozen=True)
class HealthConfig:
    """``health.storagedriver``: with ``enabled``, the storage is checked every ``interval``
    seconds and ``threshold`` failures in a row make the origin answer 503
    (:mod:`origin.storagewatch`)."""

    storagedriver_enabled: bool = False
    storagedriver_interval: float = 10.0
    storagedriver_threshold: int = 1


@dataclass(frozen=True)
class OriginConfig:
    version: str = "0.1"
    log: LogConfig = field(default_factory=LogConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    metrics_enabled: bool = True
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)
    policies: PoliciesConfig = field(default_factory=PoliciesConfig)

    @property
    def readonly(self) -> bool:
        return self.storage.maintenance.readonly

    @property
    def metrics_on_main_port(self) -> bool:
        """``/metrics`` on ``http.addr``: metrics on, and no debug listener serving them."""
        return self.metrics_enabled and not self.http.debug.serves_metrics


def _version(v: Any) -> str:
    s = as_str(v).strip()
    if s != "0.1":
        raise ValueError(f"unsupported version {s!r} (only '0.1')")
    return s


def _headers(v: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(v, Mapping):
        raise ValueError(f"expected a mapping of header name to values, got {typename(v)}")
    out: dict[str, tuple[str, ...]] = {}
    for k, vals in v.items():
        name = str(k)
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise SubKeyError(name, "not a valid header name")
        seq = [vals] if isinstance(vals, str | int | float) else vals
        if not isinstance(seq, list | tuple) or any(isinstance(x, bool) for x in seq):
            raise SubKeyError(name, "expected a string or a list of strings")
        cleaned = tuple(str(x) for x in seq)
        if any("\r" in x or "\n" in x for x in cleaned):
            raise SubKeyError(name, "header values must not contain line breaks")
        out[name] = cleaned
    return out


ORIGIN_SCHEMA: dict[str, Any] = {
    "version": Leaf(_version),
    "log": LOG_SCHEMA,
    "storage": {
        "filesystem": {
            "rootdirectory": PATH,
            "maxthreads": refuse("blocking file work runs on Python's default thread pool"),
        },
        "delete": {"enabled": BOOL},
        "maintenance": {
            "readonly": {"enabled": BOOL},
            "uploadpurging": {
                "enabled": BOOL,
                "age": DURATION,
                "interval": DURATION,
                "dryrun": BOOL,
            },
        },
        "cache": STORAGE_CACHE_SCHEMA,
        "redirect": {"disable": BOOL},
    },
    "http": {
        "addr": Leaf(as_addr),
        "net": Leaf(one_of("tcp")),
        "host": Leaf(as_url),
        "prefix": Leaf(as_prefix),
        "secret": STR,
        "relativeurls": BOOL,
        "draintimeout": DURATION,
        "tls": {
            "certificate": Leaf(as_existing_file),
            "key": Leaf(as_existing_file),
            "clientcas": Leaf(as_str_list),
            "minimumtls": Leaf(as_minimumtls),
        },
        "headers": Leaf(_headers, yaml_env=True),
        "debug": DEBUG_SCHEMA,
        "http2": {"disabled": Leaf(as_http2_disabled)},
    },
    "health": {
        "storagedriver": {
            "enabled": BOOL,
            "interval": DURATION_POSITIVE,
            "threshold": Leaf(int_at_least(1)),
        },
        **HEALTH_REFUSED,
    },
    "auth": AUTH_SCHEMA,
    "notifications": NOTIFICATIONS_SCHEMA,
    "quayside": {
        "limits": {
            "max_manifest_bytes": Leaf(as_positive_size),
            "max_blob_bytes": Leaf(as_size),
        },
        "metrics": {"enabled": BOOL},
        "auth": QUAYSIDE_AUTH_SCHEMA,
        "audit": AUDIT_SCHEMA,
        "notifications": QUAYSIDE_NOTIFICATIONS_SCHEMA,
        "replication": REPLICATION_SCHEMA,
        **OPS_SCHEMA,  # gc, retention, immutability, quotas, inventory (regcore.opsconfig)
        "policies": POLICIES_SCHEMA,
    },
}

_ORIGIN_ENV = EnvIndex(
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
    m = load_layers(ORIGIN_SCHEMA, _ORIGIN_ENV, path, environ, overrides)
    g = getter(m)
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
    root = g("storage.filesystem.rootdirectory", "./data/origin")
    return OriginConfig(
        version=g("version", "0.1"),
        log=log_config(g),
        storage=StorageConfig(
            rootdirectory=g("storage.filesystem.rootdirectory", "./data/origin"),
            delete_enabled=g("storage.delete.enabled", False),
            maintenance=MaintenanceConfig(
                readonly=g("storage.maintenance.readonly.enabled", False),
                uploadpurging=UploadPurgingConfig(
                    enabled=g("storage.maintenance.uploadpurging.enabled", True),
                    age=g("storage.maintenance.uploadpurging.age", 168 * 3600.0),
                    interval=g("storage.maintenance.uploadpurging.interval", 24 * 3600.0),
                    dryrun=g("storage.maintenance.uploadpurging.dryrun", False),
                ),
            ),
            cache=frozen(g("storage.cache", {})),
            redirect_disable=g("storage.redirect.disable", False),
        ),
        http=HTTPConfig(
            addr=g("http.addr", "127.0.0.1:5000"),
            host=g("http.host"),
            prefix=g("http.prefix", "/"),
            secret=g("http.secret"),
            relativeurls=g("http.relativeurls"),
            draintimeout=g("http.draintimeout", 0.0),
            tls=tls,
            headers=MappingProxyType(dict(g("http.headers", {}))),
            debug=debug_config(g, metrics_enabled=g("quayside.metrics.enabled", True)),
        ),
        health=HealthConfig(
            storagedriver_enabled=g("health.storagedriver.enabled", False),
            storagedriver_interval=g("health.storagedriver.interval", 10.0),
            storagedriver_threshold=g("health.storagedriver.threshold", 1),
        ),
        auth=auth_config(g, g("storage.filesystem.rootdirectory", "./data/origin")),
        limits=LimitsConfig(
            max_manifest_bytes=g("quayside.limits.max_manifest_bytes", 4 * MiB),
            max_blob_bytes=g("quayside.limits.max_blob_bytes", 0),
        ),
        metrics_enabled=g("quayside.metrics.enabled", True),
        notifications=notifications_config(g, root),
        replication=replication_config(g, root),
        ops=ops_config(g),
        policies=policies_config(g, "quayside.policies"),
    )
