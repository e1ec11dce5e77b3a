"""Token service keys: what the origin signs with, what it publishes, what others trust.

With the origin's config (``quayside.auth.tokenservice`` on) and/or its URL:

- ``signing-key``: the key and certificate files the config names exist and belong together
  (:func:`regcore.auth.signing.load_or_create` refuses to start otherwise), certificate not
  expired;
- ``jwks``: ``/auth/jwks.json`` publishes that certificate's key (same ``kid``, same public
  key): a mismatch means the running process signs with another key than the files (restart);
- ``bundle``: every certificate registries trust (``auth.token.rootcertbundle``) -- a token
  signed with the configured key verifies against that bundle as docker-registry checks it;
- ``token``: end to end, a token fetched from the running service's realm (with the edge's
  credentials for this origin when the edge config has them, else anonymously) verifies
  against the published JWKS and, when configured, against the bundle.

Skipped when the origin runs no token service and trusts no bundle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from quayside.doctor.network import explain, insecure_ssl
from quayside.doctor.results import Result
from regcore import USER_AGENT, errors
from regcore.auth.keys import libtrust_key_id, load_certificates, load_private_key
from regcore.auth.tokens import TokenIssuer, TokenVerifier
from regcore.client import parse_challenges

if TYPE_CHECKING:
    from quayside.doctor.setup import EdgeConfig, OriginConfig

__all__ = ["check_tokens"]

GROUP = "tokens"
_DER, _SPKI = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


async def check_tokens(
    origin: OriginConfig | None, origin_url: str | None, edge: EdgeConfig | None, *, timeout: float
) -> list[Result]:
    ts = origin.auth.tokenservice if origin is not None else None
    token_auth = origin.auth.token if origin is not None else None
    if origin is not None and not (ts and ts.enabled) and token_auth is None:
        return [Result.skip(GROUP, "token-service", "the origin uses no token auth")]
    out: list[Result] = []
    issuer: TokenIssuer | None = None
    if ts is not None and ts.enabled:
        result, issuer = _signing_key(origin)  # type: ignore[arg-type]
        out.append(result)
    bundle = _bundle(token_auth.rootcertbundle if token_auth else None, out)
    if issuer is not None and bundle:
        out.append(_bundle_trusts(issuer, bundle, token_auth.rootcertbundle))  # type: ignore[union-attr]
    if origin_url is None:
        return out
    timeout_ = aiohttp.ClientTimeout(total=timeout)
    connector = aiohttp.TCPConnector(
        ssl=insecure_ssl() if origin_url.startswith("https") else False
    )
    async with aiohttp.ClientSession(
        timeout=timeout_, connector=connector, headers={"User-Agent": USER_AGENT}
    ) as session:
        jwks = await _jwks(session, origin_url, issuer, ts is not None and ts.enabled, out)
        if jwks is not None or bundle:
            out.append(await _end_to_end(session, origin_url, edge, jwks, bundle, token_auth))
    return out


def _signing_key(origin: OriginConfig) -> tuple[Result, TokenIssuer | None]:
    ts = origin.auth.tokenservice
    key_path, cert_path = Path(ts.key), Path(ts.certificate)
    if not key_path.exists() and not cert_path.exists():
        return (
            Result.warn(
                GROUP,
                "signing-key",
                f"{key_path} not created yet",
                "start the origin once: it creates the key and certificate",
            ),
            None,
        )
    try:
        key = load_private_key(key_path.read_bytes())
        certs = load_certificates(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        return Result.fail(GROUP, "signing-key", f"unreadable: {exc}"[:200], "fix the files"), None
    cert = certs[0]
    if cert.public_key().public_bytes(_DER, _SPKI) != key.public_key().public_bytes(_DER, _SPKI):
        return (
            Result.fail(
                GROUP,
                "signing-key",
                f"{cert_path} does not belong to the key in {key_path}",
                "restore the matching pair (or remove both: the origin creates a new pair)",
            ),
            None,
        )
    kid = libtrust_key_id(cert.public_key())  # type: ignore[arg-type]
    issuer = TokenIssuer(key, cert, ts.issuer, ts.service, roots=(cert,), header="both")
    return Result.ok(
        GROUP, "signing-key", f"{cert_path} matches its key (kid {kid[:14]}...)"
    ), issuer


def _bundle(path: str | None, out: list[Result]) -> list[x509.Certificate]:
    if not path:
        return []
    try:
        return load_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        out.append(Result.fail(GROUP, "bundle", f"{path}: {exc}"[:200], "fix rootcertbundle"))
        return []


def _bundle_trusts(issuer: TokenIssuer, bundle: list[x509.Certificate], path: str) -> Result:
    token = issuer.issue("quayside-doctor", []).token
    try:
        TokenVerifier(bundle, issuer.issuer, issuer.service).verify(token)
    except errors.Unauthorized as exc:
        return Result.fail(
            GROUP,
            "bundle",
            f"registries trusting {path} refuse tokens signed with the configured key ({exc.detail})",
            "append the token service certificate to the bundle and restart those registries",
        )
    return Result.ok(GROUP, "bundle", f"{path} trusts the signing certificate")


async def _jwks(
    session: aiohttp.ClientSession,
    url: str,
    issuer: TokenIssuer | None,
    expected: bool,
    out: list[Result],
) -> dict[str, Any] | None:
    try:
        async with session.get(url + "/auth/jwks.json") as resp:
            status = resp.status
            body = await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        out.append(Result.fail(GROUP, "jwks", f"GET /auth/jwks.json: {explain(exc)}", ""))
        return None
    if status == 404 and not expected:
        return None
    try:
        doc = json.loads(body) if status == 200 else None
        keys = {k["kid"]: k for k in doc["keys"]} if isinstance(doc, dict) else None
    except (ValueError, KeyError, TypeError):
        keys = None
    if not keys:
        out.append(
            Result.fail(
                GROUP,
                "jwks",
                f"/auth/jwks.json answered {status} without keys",
                "enable quayside.auth.tokenservice on the origin and restart it",
            )
        )
        return None
    if issuer is not None:
        kid = issuer.key_id
        served = keys.get(kid)
        same = served is not None and _jwk_public(served) == issuer.cert.public_key().public_bytes(
            _DER, _SPKI
        )
        if not same:
            out.append(
                Result.fail(
                    GROUP,
                    "jwks",
                    f"the running origin publishes {', '.join(k[:14] for k in keys)}..., not"
                    f" the key of tokenservice.certificate ({kid[:14]}...)",
                    "restart the origin (it still signs with an old key) or fix the key paths",
                )
            )
            return keys
    out.append(Result.ok(GROUP, "jwks", f"/auth/jwks.json publishes {len(keys)} key(s)"))
    return keys


def _jwk_public(jwk: dict[str, Any]) -> bytes | None:
    try:
        key = jwt.PyJWK(jwk).key
        return key.public_bytes(_DER, _SPKI)  # type: ignore[union-attr]
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError):
        return None


async def _end_to_end(
    session: aiohttp.ClientSession,
    url: str,
    edge: EdgeConfig | None,
    jwks: dict[str, Any] | None,
    bundle: list[x509.Certificate],
    token_auth: Any,
) -> Result:
    try:
        async with session.get(url + "/v2/") as resp:
            challenges = parse_challenges(resp.headers.getall("WWW-Authenticate", []))
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        if bearer is None:
            return Result.skip(GROUP, "token", "/v2/ sends no Bearer challenge")
        auth, who = _credentials_for(url, edge)
        params = {"service": bearer.service or "", "scope": "repository:quayside-doctor/probe:pull"}
        async with session.get(bearer.realm, params=params, auth=auth) as resp:
            status = resp.status
            doc = await resp.json(content_type=None) if status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Result.fail(
            GROUP, "token", f"token request failed: {explain(exc)}", "see the origin's log"
        )
    token = (doc or {}).get("token") or (doc or {}).get("access_token")
    if not token:
        return Result.fail(
            GROUP,
            "token",
            f"the realm answered {status} to {who} without a token",
            "check the edge's credentials for the origin (users, robots)",
        )
    problems = []
    header = jwt.get_unverified_header(token)
    if jwks is not None:
        jwk = jwks.get(header.get("kid", ""))
        try:
            if jwk is None:
                raise jwt.InvalidKeyError("kid not published")
            jwt.decode(
                token,
                jwt.PyJWK(jwk).key,
                algorithms=[header.get("alg", "")],
                options={"verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            problems.append(f"not verifiable with /auth/jwks.json ({type(exc).__name__})")
    if bundle and token_auth is not None:
        try:
            TokenVerifier(bundle, token_auth.issuer, token_auth.service).verify(token)
        except errors.Unauthorized as exc:
            problems.append(f"refused by registries trusting the bundle ({exc.detail})")
    if problems:
        return Result.fail(
            GROUP,
            "token",
            f"a token issued to {who}: " + "; ".join(problems),
            "restart the origin, then align rootcertbundle with tokenservice.certificate",
        )
    return Result.ok(GROUP, "token", f"a token issued to {who} verifies against the trusted keys")


def _credentials_for(url: str, edge: EdgeConfig | None) -> tuple[aiohttp.BasicAuth | None, str]:
    """The edge's credentials for the upstream at ``url`` (same host:port), if any."""
    netloc = urlsplit(url).netloc.lower()
    for upstream in edge.upstreams if edge is not None else ():
        if upstream.netloc == netloc and upstream.username:
            try:
                password = upstream.read_password() or ""
            except OSError:
                break
            return aiohttp.BasicAuth(upstream.username, password), f"the edge ({upstream.username})"
    return None, "anonymous"
