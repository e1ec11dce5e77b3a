"""The claim checks every registry token verifier shares (the origin's certificate-based
:class:`regcore.auth.tokens.TokenVerifier` and the edge's JWKS-based one): signature, issuer,
audience, required claims, and ``exp``/``nbf`` against the caller's clock."""

from __future__ import annotations

from typing import Any

import jwt

__all__ = ["TokenRejected", "decode_checked"]


class TokenRejected(Exception):
    """Why a token was refused: a reason safe to show, never the token itself."""


def decode_checked(
    token: str,
    key: Any,
    alg: str,
    *,
    audience: str,
    issuer: str,
    leeway: float,
    now: float,
) -> dict[str, Any]:
    """The claims of ``token`` signed with ``key`` (``alg``), for ``audience`` from ``issuer``,
    valid at ``now`` (``exp``/``nbf`` checked against that clock, within ``leeway``). The one
    place both the origin's verifier and the edge's JWKS verifier check a token's claims.

    Raises:
        TokenRejected: bad signature, wrong issuer or audience, missing or malformed claims,
            expired or not yet valid.
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={
                "require": ["exp", "iss", "aud"],
                "verify_iat": False,
                "verify_exp": False,  # checked below against our clock
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"invalid token: {type(exc).__name__}") from None
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
        raise TokenRejected("invalid token: malformed exp/nbf")
    if now > exp + leeway:
        raise TokenRejected("token expired")
    if now < nbf - leeway:
        raise TokenRejected("token not valid yet")
    return claims
