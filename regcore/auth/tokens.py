"""JWT bearer tokens as registry:2 (distribution 2.8) token auth issues and trusts them.

Token shape (the distribution "Token Authentication Implementation" spec)::

    header  {"typ": "JWT", "alg": "ES256" | "RS256" ..., "x5c": [leaf, intermediates...]}
            or {"kid": "<libtrust key id>"} instead of x5c
    claims  {"iss", "sub", "aud": <service> (a *string*: 2.8 rejects a list), "exp", "nbf",
             "iat", "jti", "access": [{"type": "repository", "name": "a/b",
                                       "actions": ["pull", "push"]}]}

docker-registry 2.8 verifies a token against ``auth.token.rootcertbundle``: with ``x5c`` the
leaf certificate must chain to a bundle certificate (its key then checks the signature);
with ``kid`` the id must be the libtrust fingerprint of a bundle certificate's key
(:func:`libtrust_key_id`). ``iss`` must equal ``auth.token.issuer``, ``aud`` the
``auth.token.service``; ``exp``/``nbf`` get 60 s leeway.

:class:`TokenIssuer` signs; :class:`TokenVerifier` checks (for our origin). Verification
failures raise :class:`regcore.errors.Unauthorized` with the reason (never the token).
Scope strings (``repository:name:pull,push``) are parsed by :meth:`Access.parse`; scopes live
in :mod:`regcore.auth.scopes` (no JWT there), keys and certificates in :mod:`regcore.auth.keys`
(the names of both are re-exported here).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from regcore import errors
from regcore.auth.claims import TokenRejected, decode_checked
from regcore.auth.keys import (
    PrivateKey,
    PublicKey,
    algorithm_for,
    generate_key,
    libtrust_key_id,
    load_certificates,
    load_private_key,
    make_certificate,
    pem_bundle,
)
from regcore.auth.scopes import Access, access_from_claims, allows, parse_scopes

__all__ = [
    "ALGORITHMS",
    "LEEWAY",
    "Access",
    "IssuedToken",
    "KeyHeader",
    "PrivateKey",
    "PublicKey",
    "TokenIssuer",
    "TokenVerifier",
    "access_from_claims",
    "algorithm_for",
    "allows",
    "generate_key",
    "libtrust_key_id",
    "load_certificates",
    "load_private_key",
    "make_certificate",
    "parse_scopes",
    "pem_bundle",
]

KeyHeader = Literal["x5c", "kid", "both"]
ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512")
LEEWAY = 60


# -- issuing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: dt.datetime

    def to_response(self) -> dict[str, Any]:
        """The token endpoint's JSON body (both ``token`` and ``access_token``, per spec)."""
        return {
            "token": self.token,
            "access_token": self.token,
            "expires_in": self.expires_in,
            "issued_at": self.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class TokenIssuer:
    """Signs registry tokens with ``key`` (certificate ``cert``, intermediates ``chain``).

    ``roots`` is the trust bundle a registry is configured with (default: the last of
    ``chain``, else ``cert`` itself); :meth:`bundle_pem` writes it (plus ``cert`` in ``kid``
    mode, because then the registry must know the signing key itself). Thread-safe.
    """

    def __init__(
        self,
        key: PrivateKey,
        cert: x509.Certificate,
        issuer: str,
        service: str,
        *,
        chain: Sequence[x509.Certificate] = (),
        roots: Sequence[x509.Certificate] | None = None,
        header: KeyHeader = "x5c",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.cert = cert
        self.issuer = issuer
        self.service = service
        self.chain = tuple(chain)
        self.roots = (
            tuple(roots) if roots is not None else ((self.chain[-1],) if self.chain else (cert,))
        )
        self.header = header
        self.algorithm = algorithm_for(key)
        self._clock = clock

    @classmethod
    def generate(
        cls,
        issuer: str = "quayside-token-issuer",
        service: str = "quayside-registry",
        *,
        algorithm: str = "ES256",
        header: KeyHeader = "x5c",
        clock: Callable[[], float] = time.time,
    ) -> TokenIssuer:
        """A throw-away CA and a signing certificate issued by it (tests, first start)."""
        ca_key = generate_key(algorithm)
        ca_cert = make_certificate(ca_key, f"{issuer} CA", ca=True)
        key = generate_key(algorithm)
        cert = make_certificate(key, f"{issuer} signing", issuer_key=ca_key, issuer_cert=ca_cert)
        return cls(key, cert, issuer, service, chain=(ca_cert,), header=header, clock=clock)

    @property
    def key_id(self) -> str:
        """The ``kid`` of the signing key (libtrust form, what docker-registry 2.8 matches)."""
        return libtrust_key_id(self.cert.public_key())  # type: ignore[arg-type]

    def bundle(self) -> list[x509.Certificate]:
        certs = list(self.roots)
        if self.header != "x5c" and self.cert not in certs:
            certs.append(self.cert)
        return certs

    def bundle_pem(self) -> bytes:
        """PEM for ``auth.token.rootcertbundle``."""
        return pem_bundle(self.bundle())

    def issue(self, subject: str, access: Iterable[Access], ttl: int = 300) -> IssuedToken:
        """A token for ``subject`` granting ``access`` for ``ttl`` seconds."""
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + ttl,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": [a.to_claim() for a in access],
        }
        headers: dict[str, Any] = {"typ": "JWT"}
        if self.header in ("x5c", "both"):
            headers["x5c"] = [_der_b64(c) for c in (self.cert, *self.chain)]
        if self.header in ("kid", "both"):
            headers["kid"] = self.key_id
        token = jwt.encode(claims, self.key, algorithm=self.algorithm, headers=headers)
        return IssuedToken(token, ttl, dt.datetime.fromtimestamp(now, dt.UTC))

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(self.bundle(), self.issuer, self.service, clock=self._clock)

    def verify(self, token: str, service: str | None = None) -> dict[str, Any]:
        """Verify a token as the registry would; see :meth:`TokenVerifier.verify`."""
        return self.verifier().verify(token, service)


class TokenVerifier:
    """Checks tokens against a trust bundle, an issuer and a service (audience)."""

    def __init__(
        self,
        roots: Sequence[x509.Certificate],
        issuer: str,
        service: str,
        *,
        leeway: int = LEEWAY,
        clock: Callable[[], float] = time.time,
        algorithms: Sequence[str] = ALGORITHMS,
    ) -> None:
        if not roots:
            raise ValueError("a token verifier needs at least one trusted certificate")
        self.roots = tuple(roots)
        self.issuer = issuer
        self.service = service
        self.leeway = leeway
        self.algorithms = tuple(algorithms) or ALGORITHMS
        self._clock = clock
        self._kids = {libtrust_key_id(c.public_key()): c for c in self.roots}  # type: ignore[arg-type]

    def verify(self, token: str, service: str | None = None) -> dict[str, Any]:
        """The claims of a valid token.

        Raises:
            errors.Unauthorized: malformed, untrusted key or chain, bad signature, wrong
                issuer or audience, expired or not yet valid.
        """
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError) as exc:  # ValueError: not encodable (aiohttp
            # keeps a header's non-UTF-8 bytes as surrogates)
            raise errors.Unauthorized("malformed token") from exc
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise errors.Unauthorized("unsupported token algorithm")
        key = self._signing_key(header)
        try:
            return decode_checked(
                token,
                key,
                alg,
                audience=service or self.service,
                issuer=self.issuer,
                leeway=self.leeway,
                now=self._clock(),
            )
        except TokenRejected as exc:
            raise errors.Unauthorized(str(exc)) from exc

    def _signing_key(self, header: dict[str, Any]) -> PublicKey:
        x5c = header.get("x5c")
        if isinstance(x5c, list) and x5c:
            return self._verify_chain(x5c)
        kid = header.get("kid")
        if isinstance(kid, str) and kid in self._kids:
            return self._kids[kid].public_key()  # type: ignore[return-value]
        raise errors.Unauthorized("token signed by an untrusted key")

    def _verify_chain(self, x5c: list[Any]) -> PublicKey:
        try:
            chain = [
                x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in x5c
            ]
        except (ValueError, TypeError) as exc:
            raise errors.Unauthorized("malformed x5c chain") from exc
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        current = chain[0]
        candidates = chain[1:]
        for _depth in range(len(chain) + 1):
            if not current.not_valid_before_utc <= now <= current.not_valid_after_utc:
                raise errors.Unauthorized("token certificate expired or not yet valid")
            if current in self.roots:
                return chain[0].public_key()  # type: ignore[return-value]
            issuer = next(
                (
                    c
                    for c in (*self.roots, *candidates)
                    if c.subject == current.issuer and _signed_by(current, c)
                ),
                None,
            )
            if issuer is None:
                break
            if issuer in self.roots:
                return chain[0].public_key()  # type: ignore[return-value]
            current = issuer
        raise errors.Unauthorized("token certificate chain is not trusted")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _der_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
