"""TLS checks of an ``https://`` URL: the served certificate, read with ``cryptography``.

- ``tls-expiry``: not yet valid or expired: fail; fewer than :data:`EXPIRY_WARN_DAYS` days
  left: warn; the days left are in the detail and in ``data.days_left``;
- ``tls-hostname``: the URL's host is among the certificate's subjectAltName DNS names
  (one-label wildcards) or IP addresses (the common name is not used, as clients ignore it);
- ``tls-trust``: a verified handshake with the system's CAs, or only the ``--ca`` bundle when
  given: a certificate from an unknown CA is a warning without ``--ca`` (clients need that CA
  installed) and a failure with it;
- ``tls-config``: with the origin's config, the served certificate is the one
  ``http.tls.certificate`` names (else the process serves an old one: restart), and that file
  belongs to ``http.tls.key``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from quayside.doctor.network import host_port, insecure_ssl
from quayside.doctor.results import Result
from regcore.auth.keys import load_private_key

if TYPE_CHECKING:
    from quayside.doctor.setup import OriginConfig

__all__ = ["EXPIRY_WARN_DAYS", "check_tls", "served_certificate"]

EXPIRY_WARN_DAYS = 21


async def served_certificate(url: str, timeout: float) -> x509.Certificate:
    """The leaf certificate ``url``'s server presents (not verified). Raises OSError,
    ssl.SSLError, TimeoutError."""
    host, port = host_port(url)
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=insecure_ssl(), server_hostname=host), timeout
    )
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
    if not der:
        raise ssl.SSLError("the server presented no certificate")
    return x509.load_der_x509_certificate(der)


async def check_tls(
    role: str,
    url: str,
    *,
    timeout: float,
    ca_file: str | None = None,
    origin: OriginConfig | None = None,
    now: dt.datetime | None = None,
) -> list[Result]:
    """The TLS results of ``url`` (nothing for a plain ``http://`` URL)."""
    if not url.startswith("https://"):
        return []
    try:
        cert = await served_certificate(url, timeout)
    except (OSError, ssl.SSLError, TimeoutError, ValueError) as exc:
        return [
            Result.fail(
                role,
                "tls",
                f"no TLS handshake: {type(exc).__name__}: {exc}"[:200],
                "check http.tls.certificate/key and that this port speaks TLS",
            )
        ]
    out = [_expiry(role, cert, now or dt.datetime.now(dt.UTC))]
    out.append(_hostname(role, cert, host_port(url)[0]))
    out.append(await _trust(role, url, timeout, ca_file))
    if origin is not None and role == "origin" and origin.http.tls.certificate:
        out.append(_configured(role, cert, origin))
    return out


def _expiry(role: str, cert: x509.Certificate, now: dt.datetime) -> Result:
    after, before = cert.not_valid_after_utc, cert.not_valid_before_utc
    days_left = (after - now).total_seconds() / 86400
    data = {"not_after": after.isoformat(), "days_left": int(days_left)}
    fix = "renew it (quayside certs init --hosts ...) and restart the server"
    if now < before:
        return Result.fail(
            role, "tls-expiry", f"not valid before {before:%Y-%m-%d %H:%M} UTC", fix, **data
        )
    if now > after:
        return Result.fail(
            role,
            "tls-expiry",
            f"expired {after:%Y-%m-%d} ({int(-days_left)} days ago)",
            fix,
            **data,
        )
    detail = f"valid until {after:%Y-%m-%d} ({int(days_left)} days left)"
    if days_left < EXPIRY_WARN_DAYS:
        return Result.warn(role, "tls-expiry", detail, fix, **data)
    return Result.ok(role, "tls-expiry", detail, **data)


def _names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    dns = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return dns, ips


def _hostname(role: str, cert: x509.Certificate, host: str) -> Result:
    dns, ips = _names(cert)
    shown = ", ".join([*dns, *ips]) or "no subjectAltName"
    fix = f"reissue the certificate with {host} in subjectAltName (quayside certs init --hosts)"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if addr is not None:
        ok = any(ipaddress.ip_address(ip) == addr for ip in ips)
    else:
        ok = any(_dns_match(pattern, host.lower()) for pattern in dns)
    if ok:
        return Result.ok(role, "tls-hostname", f"certificate names {host}")
    return Result.fail(role, "tls-hostname", f"certificate is for {shown}, not {host}", fix)


def _dns_match(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


async def _trust(role: str, url: str, timeout: float, ca_file: str | None) -> Result:
    host, port = host_port(url)
    try:
        ctx = (
            ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        )
        ctx.check_hostname = False  # the hostname check above says which names are missing
    except (OSError, ssl.SSLError) as exc:
        return Result.fail(role, "tls-trust", f"cannot load --ca {ca_file}: {exc}", "fix --ca")
    source = f"the CA in {ca_file}" if ca_file else "this system's CAs"
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname=host), timeout
        )
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
    except ssl.SSLCertVerificationError as exc:
        why = exc.verify_message or str(exc)
        if ca_file:
            return Result.fail(
                role,
                "tls-trust",
                f"not trusted by {source}: {why}",
                "serve the full chain (leaf + intermediates) issued by that CA",
            )
        return Result.warn(
            role,
            "tls-trust",
            f"not trusted by {source}: {why}",
            "install the CA on every client (certs.d/<host:port>/ca.crt); check with --ca",
        )
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        return Result.fail(
            role, "tls-trust", f"handshake failed: {exc}"[:200], "see the server log"
        )
    return Result.ok(role, "tls-trust", f"chain verifies against {source}")


def _configured(role: str, served: x509.Certificate, origin: OriginConfig) -> Result:
    tls = origin.http.tls
    try:
        pem = Path(tls.certificate or "").read_bytes()
        configured = x509.load_pem_x509_certificates(pem)[0]
        key = load_private_key(Path(tls.key or "").read_bytes())
    except (OSError, ValueError) as exc:
        return Result.fail(
            role, "tls-config", f"cannot read http.tls files: {exc}"[:200], "fix the paths"
        )
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if configured.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        return Result.fail(
            role,
            "tls-config",
            f"{tls.certificate} does not belong to the key in {tls.key}",
            "pair the certificate with its own key",
        )
    if configured.fingerprint(hashes.SHA256()) != served.fingerprint(hashes.SHA256()):
        return Result.fail(
            role,
            "tls-config",
            f"the origin serves another certificate than {tls.certificate}",
            "restart the origin to load the current certificate file",
        )
    return Result.ok(role, "tls-config", f"serves {tls.certificate}, which matches its key")
