"""Public keys that verify image signatures, in cosign's key format (PEM ``PUBLIC KEY``).

Accepted keys and the signature scheme each verifies (what ``cosign sign --key`` and
containers/image's sigstore signer produce for that key type):

- ECDSA on P-256 (cosign's default), P-384 or P-521: an ASN.1 DER signature over SHA-256 of
  the message (SHA-384 / SHA-512 are also accepted on the larger curves);
- RSA (2048 bits or more): PKCS #1 v1.5 with SHA-256 (PSS with SHA-256 is also accepted);
- Ed25519: a pure Ed25519 signature over the message itself.

A key is named by :attr:`PublicKey.key_id`, ``sha256:`` + the hex SHA-256 of its DER
SubjectPublicKeyInfo (stable across PEM re-encodings, safe to log). :meth:`PublicKey.verify`
never raises for a bad signature: it answers ``False``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import load_der_x509_certificate, load_pem_x509_certificate

__all__ = ["PublicKey", "key_from_certificate", "load_public_key", "load_public_key_file"]

MIN_RSA_BITS = 2048
_EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_EC_EXTRA_HASH: dict[str, type[hashes.HashAlgorithm]] = {
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


@dataclass(frozen=True, eq=False)
class PublicKey:
    """One trusted key. ``kind`` is ``ecdsa-P-256``, ``rsa-3072``, ``ed25519``...; ``source``
    says where it came from (a file name) for messages."""

    key: Any
    kind: str
    key_id: str
    source: str

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's signature over ``message`` (see the module
        docstring for the scheme of each key type). Never raises for a wrong signature."""
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                return self._verify_ec(signature, message)
            if isinstance(self.key, rsa.RSAPublicKey):
                return self._verify_rsa(signature, message)
            self.key.verify(signature, message)  # Ed25519
            return True
        except (InvalidSignature, ValueError, TypeError):
            return False

    def _verify_ec(self, signature: bytes, message: bytes) -> bool:
        algorithms: list[type[hashes.HashAlgorithm]] = [hashes.SHA256]
        extra = _EC_EXTRA_HASH.get(self.key.curve.name)
        if extra is not None:
            algorithms.append(extra)
        for algorithm in algorithms:
            try:
                self.key.verify(signature, message, ec.ECDSA(algorithm()))
                return True
            except InvalidSignature:
                continue
        return False

    def _verify_rsa(self, signature: bytes, message: bytes) -> bool:
        try:
            self.key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            return True
        except InvalidSignature:
            pass
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
        self.key.verify(signature, message, pss, hashes.SHA256())
        return True


def _wrap(key: Any, source: str) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _EC_CURVES.get(key.curve.name)
        if curve is None:
            raise ValueError(f"{source}: unsupported ECDSA curve {key.curve.name}")
        kind = f"ecdsa-{curve}"
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"{source}: RSA keys need at least {MIN_RSA_BITS} bits")
        kind = f"rsa-{key.key_size}"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        kind = "ed25519"
    else:
        raise ValueError(f"{source}: unsupported key type {type(key).__name__}")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PublicKey(key, kind, "sha256:" + hashlib.sha256(der).hexdigest(), source)


def load_public_key(pem: bytes, source: str = "<key>") -> PublicKey:
    """A public key from PEM bytes (cosign's ``cosign.pub``). Raises ValueError naming
    ``source`` for anything that is not an accepted public key (a private key included)."""
    if b"PRIVATE KEY" in pem:
        raise ValueError(f"{source}: a private key, not a public key")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{source}: not a PEM public key ({exc})") from None
    return _wrap(key, source)


def load_public_key_file(path: str | Path) -> PublicKey:
    """:func:`load_public_key` of a file. Raises ValueError (unreadable or not a key)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return load_public_key(data, p.name)


def key_from_certificate(cert: bytes, source: str = "<certificate>") -> PublicKey:
    """The public key of an X.509 certificate (PEM or DER). Only used to check signatures
    against keys a test or an operator extracted; certificates are never trusted by chain."""
    try:
        loaded = (
            load_pem_x509_certificate(cert)
            if cert.lstrip().startswith(b"-----")
            else load_der_x509_certificate(cert)
        )
    except ValueError as exc:
        raise ValueError(f"{source}: not an X.509 certificate ({exc})") from None
    return _wrap(loaded.public_key(), source)
