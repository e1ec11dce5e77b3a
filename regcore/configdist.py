"""Distribution keys the origin implements in part: which values it accepts, and why.

A registry:2 ``config.yml`` carries keys made for distribution's own design (storage drivers,
Redis caches, pprof). The project rule: every key the origin accepts does what it says; a key
or a value it does not implement stops start-up with a :class:`ConfigError` naming the source,
the dotted key and what to use instead. The leaves here raise ``ValueError`` (the schema
machinery adds source and key); :func:`debug_config` checks the ``http.debug`` section as a
whole.

============================== ===============================================================
key                            what the origin does
============================== ===============================================================
storage.cache.blobdescriptor   ``inmemory`` accepted: that cache only saves distribution's
                               remote drivers a stat per blob and changes no answer; the
                               origin stats its local files (the kernel's dentry cache is its
                               in-memory cache), so every answer is the same. ``redis``
                               refused (no shared descriptor cache).
storage.cache                  ``blobdescriptorsize`` (a bound on that cache's entries; none
  .blobdescriptorsize          are kept, so it holds) accepted; any other key is unknown.
storage.redirect.disable       ``true`` and ``false`` accepted: blobs on filesystem storage are
                               never redirected, in distribution (its filesystem driver has
                               no URLs to redirect to) as here.
storage.filesystem.maxthreads  refused (blocking file work runs on Python's thread pool).
http.prefix                    ``/`` only; any other prefix refused (routes are at ``/v2/``).
http.http2.disabled            ``true`` accepted (the origin speaks HTTP/1.1 only); ``false``
                               refused, it asks for HTTP/2.
http.tls.minimumtls            ``tls1.2`` or ``tls1.3``; ``tls1.0``/``tls1.1`` refused.
http.debug                     a second listener at ``addr`` serving Prometheus metrics at
                               ``prometheus.path`` (see :class:`DebugConfig`).
health.file / .http / .tcp     refused (use ``/healthz`` and ``/readyz``).
log.hooks                      refused (mail hooks; ship the JSON log instead).
============================== ===============================================================

``http.headers``, ``http.relativeurls`` and ``health.storagedriver`` are implemented by the
origin itself (:mod:`origin.app`, :func:`origin.blobs.location`, :mod:`origin.storagewatch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from regcore.configschema import ConfigError, Getter, Leaf
from regcore.configvalues import BOOL, as_addr, as_str, int_at_least, split_hostport

__all__ = [
    "DEBUG_SCHEMA",
    "HEALTH_REFUSED",
    "STORAGE_CACHE_SCHEMA",
    "DebugConfig",
    "as_http2_disabled",
    "as_metrics_path",
    "as_minimumtls",
    "as_prefix",
    "debug_config",
    "refuse",
]

NOT_SUPPORTED = "not supported by Quayside"


def refuse(why: str) -> Leaf:
    """A leaf that rejects any value: ``not supported by Quayside (<why>)``."""

    def coerce(v: Any) -> Any:
        raise ValueError(f"{NOT_SUPPORTED} ({why})")

    return Leaf(coerce, yaml_env=True)


def _blobdescriptor(v: Any) -> str:
    s = as_str(v).strip().lower()
    if s == "inmemory":
        return s
    if s == "redis":
        raise ValueError(
            f"'redis' is {NOT_SUPPORTED} (no shared descriptor cache; use 'inmemory' or "
            "remove storage.cache)"
        )
    raise ValueError(f"expected 'inmemory', got {v!r}")


def as_prefix(v: Any) -> str:
    """``http.prefix``: only ``/`` (the default) is served."""
    s = as_str(v).strip()
    if s.rstrip("/") != "":
        raise ValueError(
            f"prefix {s!r} is {NOT_SUPPORTED} (the API is served at /v2/; put a reverse "
            "proxy in front to publish it under a path)"
        )
    return "/"


def as_http2_disabled(v: Any) -> bool:
    """``http.http2.disabled``: ``true`` only (no HTTP/2 is served)."""
    disabled: bool = BOOL.coerce(v)
    if not disabled:
        raise ValueError(
            f"HTTP/2 is {NOT_SUPPORTED} (the origin speaks HTTP/1.1; set true or remove "
            "http.http2, or terminate HTTP/2 at a reverse proxy)"
        )
    return True


def as_minimumtls(v: Any) -> str:
    """``http.tls.minimumtls``: ``tls1.2`` or ``tls1.3``."""
    s = as_str(v).strip().lower()
    if s in ("tls1.2", "tls1.3"):
        return s
    if s in ("tls1.0", "tls1.1"):
        raise ValueError(f"{s} is {NOT_SUPPORTED} (the minimum is tls1.2)")
    raise ValueError(f"expected tls1.2 or tls1.3, got {v!r}")


def as_metrics_path(v: Any) -> str:
    s = as_str(v).strip()
    if not s.startswith("/") or any(c in s for c in "?# "):
        raise ValueError(f"expected an absolute URL path like /metrics, got {v!r}")
    return s


STORAGE_CACHE_SCHEMA: dict[str, Any] = {
    "blobdescriptor": Leaf(_blobdescriptor),
    "blobdescriptorsize": Leaf(int_at_least(1)),
}

DEBUG_SCHEMA: dict[str, Any] = {
    "addr": Leaf(as_addr),
    "prometheus": {"enabled": BOOL, "path": Leaf(as_metrics_path)},
}

_HEALTH_WHY = "the origin checks its storage itself: probe /healthz and /readyz"
HEALTH_REFUSED: dict[str, Any] = {
    "file": refuse(_HEALTH_WHY),
    "http": refuse(_HEALTH_WHY),
    "tcp": refuse(_HEALTH_WHY),
}


@dataclass(frozen=True)
class DebugConfig:
    """``http.debug``: with ``addr`` and ``prometheus_enabled``, a second listener serves the
    metrics at ``prometheus_path`` and the main port serves no ``/metrics``."""

    addr: str | None = None
    prometheus_enabled: bool = False
    prometheus_path: str = "/metrics"

    @property
    def serves_metrics(self) -> bool:
        return self.addr is not None and self.prometheus_enabled

    @property
    def bind(self) -> tuple[str, int]:
        """(host, port) of ``addr``; an empty host becomes ``0.0.0.0``. Raises ValueError
        without an address."""
        if self.addr is None:
            raise ValueError("no http.debug.addr")
        host, port = split_hostport(self.addr)
        return host or "0.0.0.0", port


def debug_config(g: Getter, *, metrics_enabled: bool) -> DebugConfig:
    """``http.debug`` of a merged origin tree, checked as a whole.

    Raises:
        ConfigError: ``addr`` without ``prometheus.enabled`` (distribution's listener would
            serve pprof and expvar, which Quayside does not), ``prometheus.enabled`` without
            ``addr``, or metrics on the debug listener with ``quayside.metrics.enabled: false``.
    """
    cfg = DebugConfig(
        addr=g("http.debug.addr"),
        prometheus_enabled=g("http.debug.prometheus.enabled", False),
        prometheus_path=g("http.debug.prometheus.path", "/metrics"),
    )
    if cfg.addr is not None and not cfg.prometheus_enabled:
        raise _error(
            "http.debug.addr",
            f"a debug listener without http.debug.prometheus.enabled: true is {NOT_SUPPORTED} "
            "(it serves Prometheus metrics only, no pprof or expvar)",
        )
    if cfg.prometheus_enabled and cfg.addr is None:
        raise _error(
            "http.debug.prometheus.enabled",
            "needs http.debug.addr (the listener that serves the metrics)",
        )
    if cfg.prometheus_enabled and not metrics_enabled:
        raise _error(
            "http.debug.prometheus.enabled",
            "conflicts with quayside.metrics.enabled: false (metrics are off)",
        )
    return cfg


def _error(key: str, problem: str) -> ConfigError:
    return ConfigError(f"config: {key}: {problem}", key=key, source="config", problem=problem)
