"""A small certificate authority and server certificates for TLS (``quayside certs init``).

:func:`init_certs` writes into ``out``: ``ca.crt``/``ca.key`` (a P-256 CA, 10 years) and
``server.crt``/``server.key`` (P-256, ``serverAuth``, subjectAltName = every host given: DNS
names and IP addresses, 825 days, the most clients accept). Private keys get mode 0600. An
existing CA in ``out`` is reused, so re-running with more hosts keeps clients' trust.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertFiles", "init_certs"]


@dataclass(frozen=True)
class CertFiles:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    hosts: tuple[str, ...]
    ca_created: bool


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Quayside"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def init_certs(out: str | Path, hosts: Sequence[str], *, days: int = 825) -> CertFiles:
    """Create (or reuse) the CA and issue a server certificate for ``hosts``.

    Raises ValueError for no hosts or a host with a port or scheme."""
    clean = tuple(h.strip() for h in hosts if h.strip())
    if not clean:
        raise ValueError("give at least one host name or IP address")
    for h in clean:
        if "/" in h or (":" in h and not _is_ip(h)):
            raise ValueError(f"{h!r}: give a bare host name or IP address (no scheme or port)")
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    ca_cert_p, ca_key_p = d / "ca.crt", d / "ca.key"
    now = dt.datetime.now(dt.UTC)
    created = not (ca_cert_p.exists() and ca_key_p.exists())
    if created:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Quayside local CA"))
            .issuer_name(_name("Quayside local CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(ca_key_p, ca_key)
        ca_cert_p.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    else:
        loaded = serialization.load_pem_private_key(ca_key_p.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{ca_key_p}: not an EC key")
        ca_key = loaded
        ca_cert = x509.load_pem_x509_certificate(ca_cert_p.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(clean[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(clean), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_p, key_p = d / "server.crt", d / "server.key"
    _write_key(key_p, key)
    cert_p.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    return CertFiles(ca_cert_p, ca_key_p, cert_p, key_p, clean, created)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
