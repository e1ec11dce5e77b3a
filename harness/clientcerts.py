"""Client certificates for mTLS tests, issued by the CA that ``quayside certs init``
(:func:`regcore.auth.tlscerts.init_certs`) created, or by a CA of their own.

:func:`issue_client_cert` writes ``<name>.crt``/``<name>.key`` (P-256, ``clientAuth``, one day)
into ``out`` and returns both paths; :func:`foreign_ca` makes a separate CA (``ca.crt`` /
``ca.key``) whose certificates a node must refuse.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from regcore.auth.tlscerts import init_certs

__all__ = ["foreign_ca", "issue_client_cert"]


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def foreign_ca(out: Path) -> tuple[Path, Path]:
    """A CA of its own in ``out`` (``ca.crt``, ``ca.key``), made as ``quayside certs init``
    makes one: certificates it signs are not the region's."""
    files = init_certs(out, ["127.0.0.1"])
    return files.ca_cert, files.ca_key


def issue_client_cert(ca_cert: Path, ca_key: Path, out: Path, name: str) -> tuple[Path, Path]:
    """A ``clientAuth`` certificate for ``name`` signed by the CA; ``(cert path, key path)``."""
    out.mkdir(parents=True, exist_ok=True)
    issuer = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    cert_path, key_path = out / f"{name}.crt", out / f"{name}.key"
    key_path.write_bytes(_pem_key(key))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
