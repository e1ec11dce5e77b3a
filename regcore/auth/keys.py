"""Signing keys and X.509 certificates for registry tokens (:mod:`regcore.auth.tokens`).

EC (P-256/384/521, ``ES*``) and RSA (``RS*``) keys only. :func:`make_certificate` builds the
throw-away CAs and signing certificates tests and first starts use; :func:`libtrust_key_id` is
the ``kid`` docker-registry 2.8 matches against its trust bundle.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "PrivateKey",
    "PublicKey",
    "algorithm_for",
    "generate_key",
    "libtrust_key_id",
    "load_certificates",
    "load_private_key",
    "make_certificate",
    "pem_bundle",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def generate_key(algorithm: str = "ES256") -> PrivateKey:
    """A fresh P-256 (``ES256``) or RSA-2048 (``RS256``) private key."""
    if algorithm.startswith("ES"):
        curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[
            algorithm
        ]
        return ec.generate_private_key(curve)
    if algorithm.startswith("RS"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unsupported algorithm {algorithm}")


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    """The JWS ``alg`` for a key: ES256/384/512 by curve size, RS256 for RSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {256: "ES256", 384: "ES384", 521: "ES512"}[key.curve.key_size]
    return "RS256"


def make_certificate(
    subject_key: PrivateKey,
    common_name: str,
    *,
    issuer_key: PrivateKey | None = None,
    issuer_cert: x509.Certificate | None = None,
    ca: bool = False,
    days: int = 3650,
) -> x509.Certificate:
    """A certificate for ``subject_key``: self-signed when no issuer is given."""
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    signer = issuer_key or subject_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return builder.sign(signer, hashes.SHA256())


def pem_bundle(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def load_private_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("token signing key must be EC or RSA")
    return key


def libtrust_key_id(key: PublicKey) -> str:
    """docker/libtrust's key id: base32 of the first 240 bits of sha256(DER SPKI), grouped
    by 4 characters with ``:`` (``ABCD:EFGH:...``, 12 groups)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))
