"""The token service's signing key, kept under the origin's root, and its JWKS document.

:func:`load_or_create` reads the PEM key and certificate at the configured paths, or on first
start creates them: a fresh ES256 (P-256) or RS256 (RSA-2048) key, written with mode 0600, and a
self-signed certificate for it (10 years) -- that certificate is the ``rootcertbundle`` a
registry (docker-registry/registry:2, or this origin in ``auth.token`` mode) trusts. Tokens
carry both ``x5c`` (the certificate: registry:2 verifies it against the bundle) and ``kid``
(the key id also published at ``/auth/jwks.json``).

Raises ValueError for an unusable key or a certificate that does not match the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from regcore.auth.keys import (
    PublicKey,
    algorithm_for,
    generate_key,
    load_private_key,
    make_certificate,
    pem_bundle,
)
from regcore.auth.tokens import TokenIssuer

__all__ = ["jwk_for", "jwks_document", "load_or_create"]


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_or_create(
    key_path: str | Path,
    cert_path: str | Path,
    *,
    issuer: str,
    service: str,
    algorithm: str = "ES256",
) -> tuple[TokenIssuer, bool]:
    """``(issuer, created)``: the signing key at ``key_path`` (+ certificate at
    ``cert_path``), created on first use. Raises ValueError, OSError."""
    kp, cp = Path(key_path), Path(cert_path)
    created = False
    if not kp.exists():
        key = generate_key(algorithm)
        _write_private(
            kp,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        cert = make_certificate(key, f"{issuer} token signing", days=3650)
        cp.parent.mkdir(parents=True, exist_ok=True)
        cp.write_bytes(pem_bundle([cert]))
        created = True
    key = load_private_key(kp.read_bytes())
    certs = x509.load_pem_x509_certificates(cp.read_bytes())
    cert = certs[0]
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise ValueError(f"{cp}: certificate does not belong to the key in {kp}")
    token_issuer = TokenIssuer(
        key, cert, issuer, service, chain=tuple(certs[1:]), roots=(cert,), header="both"
    )
    return token_issuer, created


def jwk_for(key: PublicKey, kid: str) -> dict[str, Any]:
    """The public JWK of ``key`` with ``kid``, ``alg`` and ``use: sig``."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(key, as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
    jwk.update({"kid": kid, "alg": algorithm_for(key), "use": "sig"})
    return jwk


def jwks_document(issuer: TokenIssuer) -> dict[str, Any]:
    """``{"keys": [...]}`` for ``/auth/jwks.json``."""
    return {"keys": [jwk_for(issuer.cert.public_key(), issuer.key_id)]}  # type: ignore[arg-type]
