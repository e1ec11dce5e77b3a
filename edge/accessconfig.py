"""The edge's own access keys: ``auth.htpasswd`` (its users) and ``tls`` (HTTPS and the
identity nodes of a region show each other).

Each section has its schema fragment (:data:`EDGE_AUTH_SCHEMA`, :data:`EDGE_TLS_SCHEMA`, part of
:data:`edge.config.EDGE_SCHEMA`), its frozen dataclass (:class:`EdgeAuthConfig`,
:class:`EdgeTLSConfig`) and the function that builds it from the merged layers and checks the
keys against each other (:func:`edge_auth_config`, :func:`edge_tls_config`), called by
:func:`edge.config.load_edge_config`. What the TLS keys do at run time is :mod:`edge.authtls`;
the users, :mod:`edge.authusers`.

Guarantees: every failure is a ``ConfigError`` naming the key; the htpasswd file is read once
here, to refuse a bad one at start-up (:mod:`regcore.auth.htpasswd`, imported only when
``auth.htpasswd`` is configured).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.upstreamconfig import UpstreamConfig
from regcore.configschema import ConfigError, Leaf
from regcore.configvalues import STR, as_existing_file, as_str_list, one_of

__all__ = [
    "EDGE_AUTH_SCHEMA",
    "EDGE_TLS_SCHEMA",
    "EdgeAuthConfig",
    "EdgeTLSConfig",
    "as_existing_files",
    "edge_auth_config",
    "edge_tls_config",
]


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


def as_existing_files(v: Any) -> tuple[str, ...]:
    """A list of existing files (one path is a list of one)."""
    return tuple(as_existing_file(p) for p in as_str_list(v))


EDGE_AUTH_SCHEMA: dict[str, Any] = {"htpasswd": {"realm": STR, "path": Leaf(as_existing_file)}}

EDGE_TLS_SCHEMA: dict[str, Any] = {
    "certificate": Leaf(as_existing_file),
    "key": Leaf(as_existing_file),
    "minimumtls": Leaf(one_of("tls1.2", "tls1.3")),
    "clientcas": Leaf(as_existing_files),
    "peer": {
        "certificate": Leaf(as_existing_file),
        "key": Leaf(as_existing_file),
        "cas": Leaf(as_existing_files),
    },
}


def edge_tls_config(g: Any) -> EdgeTLSConfig:
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


def edge_auth_config(g: Any, upstreams: tuple[UpstreamConfig, ...]) -> EdgeAuthConfig:
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
