"""TLS towards a configured peer of the origin (a replication target, a webhook endpoint).

The ``tls:`` mapping of such a peer::

    tls:
      ca: /etc/quayside/dr-ca.crt          # PEM bundle trusted *in addition to* the system store
      certificate: /etc/quayside/client.crt  # client certificate for mTLS (with key)
      key: /etc/quayside/client.key          # unencrypted PEM key matching the certificate
      servername: registry.dr.internal     # SNI and the name the certificate must carry
      insecureskipverify: false            # true: no verification at all (logged at start-up)

Decisions (the same shape as the edge's ``tls.peer``): ``ca`` *adds* to the system trust store,
it does not replace it, so a target whose redirects go to a public CDN keeps working and a
public certificate on the target is still accepted. ``certificate`` and ``key`` go together.

:func:`as_client_tls` is the schema coercer: it reads every file once at config load and raises
:class:`~regcore.configschema.SubKeyError` naming the sub-key (``ca``, ``certificate``, ``key``,
``servername``, ``insecureskipverify``) for a missing or unreadable file, a file with no PEM
certificate, an encrypted or unreadable key, or a key that does not match the certificate.
Messages name files by path only; no key or certificate material ever appears in them.

:func:`client_contexts` builds the contexts once per peer: ``own`` (trust store + ``ca``, the
client certificate, ``servername``, or no verification) for requests to the peer's own origin,
and ``foreign`` (trust store + ``ca``, verified, no client certificate) for any other host a
redirect or token realm leads to: the client certificate, a name override and a disabled check
never apply beyond the configured origin.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regcore.configschema import SubKeyError, typename
from regcore.configvalues import BOOL, as_str

__all__ = ["ClientTLS", "ClientTLSContexts", "as_client_tls", "client_contexts", "warn_insecure"]

_KEYS = ("ca", "certificate", "key", "servername", "insecureskipverify")
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")


@dataclass(frozen=True)
class ClientTLS:
    """Checked ``tls:`` settings of one peer (paths, not contents)."""

    ca: str | None = None
    certificate: str | None = None
    key: str | None = None
    servername: str | None = None
    insecureskipverify: bool = False


@dataclass(frozen=True)
class ClientTLSContexts:
    """The contexts of one peer, built once (see the module docstring)."""

    own: ssl.SSLContext
    foreign: ssl.SSLContext
    server_hostname: str | None = None
    client_certificate: bool = False

    def request_options(self, *, own_origin: bool) -> dict[str, Any]:
        """aiohttp request keyword arguments for an ``https`` request to the peer's own origin
        (``own_origin``) or to another one."""
        if not own_origin:
            return {"ssl": self.foreign}
        if self.server_hostname is None:
            return {"ssl": self.own}
        return {"ssl": self.own, "server_hostname": self.server_hostname}


def _readable(sub: str, value: Any) -> str:
    path = os.path.expanduser(as_str(value)) if value not in (None, "") else ""
    if not path:
        raise SubKeyError(sub, "must not be empty")
    if not os.path.isfile(path):
        raise SubKeyError(sub, f"file {path!r} does not exist")
    if not os.access(path, os.R_OK):
        raise SubKeyError(sub, f"file {path!r} is not readable")
    return path


def _check_ca(path: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError):
        raise SubKeyError("ca", f"file {path!r} holds no usable PEM certificate") from None


def _check_pair(cert_path: str, key_path: str) -> None:
    """Both parse, the key is unencrypted and matches the certificate, OpenSSL takes them.
    (cryptography is imported here, only when a client certificate is configured: processes
    without one do not load it.)"""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        with open(cert_path, "rb") as fh:
            certs = x509.load_pem_x509_certificates(fh.read())
    except (ValueError, OSError):
        certs = []
    if not certs:
        raise SubKeyError("certificate", f"file {cert_path!r} holds no PEM certificate")
    try:
        with open(key_path, "rb") as fh:
            key = serialization.load_pem_private_key(fh.read(), password=None)
    except TypeError:
        raise SubKeyError(
            "key", f"file {key_path!r} is encrypted (give an unencrypted PEM key)"
        ) from None
    except (ValueError, OSError, UnsupportedAlgorithm):
        raise SubKeyError("key", f"file {key_path!r} holds no usable PEM private key") from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certs[0].public_key().public_bytes(*raw) != key.public_key().public_bytes(*raw):
        raise SubKeyError("key", f"file {key_path!r} does not match the certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_cert_chain(cert_path, key_path, password=_no_password)
    except (ssl.SSLError, OSError):
        raise SubKeyError("certificate", f"file {cert_path!r} is not usable by OpenSSL") from None


def _no_password() -> bytes:
    """Keeps OpenSSL from prompting on a terminal for an encrypted key's password."""
    return b""


def _servername(value: Any) -> str:
    name = as_str(value).strip()
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(name) or ".." in name:
        raise SubKeyError("servername", f"{name!r} is not a host name (no scheme or port)")
    return name.lower().rstrip(".")


def as_client_tls(value: Any) -> ClientTLS | None:
    """Schema coercer for a ``tls:`` mapping (see the module docstring); None when empty.

    Raises:
        SubKeyError: naming the sub-key, for every problem listed in the module docstring.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping, got {typename(value)}")
    unknown = sorted(set(map(str, value)) - set(_KEYS))
    if unknown:
        raise SubKeyError(unknown[0], "unknown key")
    if not value:
        return None
    ca = _readable("ca", value["ca"]) if value.get("ca") is not None else None
    if ca is not None:
        _check_ca(ca)
    cert = value.get("certificate")
    key = value.get("key")
    if (cert is None) != (key is None):
        missing = "key" if key is None else "certificate"
        raise SubKeyError(missing, "'certificate' and 'key' must be given together")
    if cert is not None:
        cert, key = _readable("certificate", cert), _readable("key", key)
        _check_pair(cert, key)
    servername = value.get("servername")
    try:
        skip = BOOL.coerce(value.get("insecureskipverify", False))
    except ValueError as exc:
        raise SubKeyError("insecureskipverify", str(exc)) from None
    return ClientTLS(
        ca=ca,
        certificate=cert,
        key=key,
        servername=_servername(servername) if servername is not None else None,
        insecureskipverify=bool(skip),
    )


def client_contexts(tls: ClientTLS | None) -> ClientTLSContexts | None:
    """The contexts for ``tls`` (None: nothing configured, aiohttp's defaults apply).

    Raises ``ssl.SSLError``/``OSError`` when a file changed since the config was loaded."""
    if tls is None:
        return None
    own = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    foreign = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.ca is not None:
        own.load_verify_locations(cafile=tls.ca)
        foreign.load_verify_locations(cafile=tls.ca)
    if tls.certificate is not None and tls.key is not None:
        own.load_cert_chain(tls.certificate, tls.key, password=_no_password)
    if tls.insecureskipverify:
        own.check_hostname = False
        own.verify_mode = ssl.CERT_NONE
    return ClientTLSContexts(
        own=own,
        foreign=foreign,
        server_hostname=tls.servername,
        client_certificate=tls.certificate is not None,
    )


def warn_insecure(log: logging.Logger, kind: str, name: str, tls: ClientTLS | None) -> None:
    """Log a warning when ``tls.insecureskipverify`` is set for ``kind`` ``name`` (call once,
    at start-up, where the contexts are built)."""
    if tls is None or not tls.insecureskipverify:
        return
    log.warning(
        f"TLS VERIFICATION DISABLED for {kind} {name!r} (tls.insecureskipverify: true): its "
        "certificate is not checked, anyone on the network path can impersonate it",
        extra={kind.rsplit(" ", 1)[-1]: name},
    )
