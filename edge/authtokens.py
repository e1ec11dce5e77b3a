"""Offline verification of an upstream's own tokens at the edge (upstream ``auth.mode: token``).

An origin with a token service (ours, or any registry that publishes a JWKS) signs registry
tokens (Docker token spec JWTs, ``kid`` in the header). The edge in front of it verifies them
without asking the origin:

- :class:`JwksKeys`: the origin's public keys from its JWKS document (``auth.jwks``, default
  ``<upstream>/auth/jwks.json``), fetched on first need and again when a token names a ``kid``
  not known yet (key rotation) -- but at most once per ``min_interval`` seconds, whatever
  callers send (a flood of tokens with invented ``kid`` values costs one fetch per interval),
  and one fetch at a time (concurrent callers share it). Documents over 64 KiB, keys that are
  neither EC nor RSA, and keys without ``kid`` are ignored.
- :class:`UpstreamTokens`: one token-mode upstream: :meth:`~UpstreamTokens.verify` checks the
  signature against those keys (the header's ``alg`` must be one we accept and match the key;
  ``x5c`` chains are not trusted here: only published keys), ``iss`` = ``auth.issuer``, ``aud``
  = the service, ``exp``/``nbf`` with 60 s leeway, and returns the claims.
  :meth:`~UpstreamTokens.challenge` is the ``WWW-Authenticate`` the origin itself would send
  (``Bearer realm=...,service=...[,scope=...][,error=...]``); realm and service not configured
  are learned once from the upstream's own ``/v2/`` challenge.

Errors: a bad token raises :class:`regcore.errors.Unauthorized` (reason only, never the token);
keys or the realm that cannot be fetched raise :class:`regcore.errors.Unavailable` (503: a
token we cannot check yet is neither accepted nor called bad).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import jwt

from edge.upstreamconfig import UpstreamAuth, UpstreamConfig
from regcore import errors
from regcore.auth.claims import TokenRejected, decode_checked
from regcore.auth.keys import PublicKey
from regcore.auth.tokens import ALGORITHMS, LEEWAY, Access
from regcore.client.auth import parse_challenges

__all__ = ["JWKS_MAX_BYTES", "MIN_REFRESH_INTERVAL", "JwksKeys", "UpstreamTokens"]

log = logging.getLogger("quayside.edge.auth")
JWKS_MAX_BYTES = 64 * 1024
JWKS_MAX_KEYS = 32
MIN_REFRESH_INTERVAL = 30.0
FETCH_TIMEOUT = 5.0

SessionProvider = Callable[[], aiohttp.ClientSession]


def _quote(value: str) -> str:
    return json.dumps(value)


class JwksKeys:
    """The signing keys of one JWKS document (see the module docstring). One event loop."""

    def __init__(
        self,
        url: str,
        session: SessionProvider,
        *,
        min_interval: float = MIN_REFRESH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._session = session
        self.min_interval = min_interval
        self._clock = clock
        self._keys: dict[str, tuple[PublicKey, str | None]] = {}
        self._last_attempt: float | None = None
        self._fetch: asyncio.Task[None] | None = None
        self.fetches = 0
        """JWKS fetches attempted (tests and metrics)."""
        self.fetched = False
        """Whether a fetch has ever succeeded."""

    async def key(self, kid: str) -> tuple[PublicKey, str | None] | None:
        """``(key, alg or None)`` for ``kid``, fetching the document when ``kid`` is unknown
        and the last fetch is at least ``min_interval`` old. None: no such key. Raises
        Unavailable when no document could ever be fetched."""
        found = self._keys.get(kid)
        if found is not None:
            return found
        await self.refresh()
        found = self._keys.get(kid)
        if found is None and not self.fetched:
            raise errors.Unavailable(message="cannot verify tokens: upstream keys unavailable")
        return found

    async def refresh(self) -> None:
        """Fetch the document unless a fetch ran less than ``min_interval`` ago (then it
        waits for the running one, if any). Never raises: failures are logged."""
        if self._fetch is not None and not self._fetch.done():
            await asyncio.shield(self._fetch)
            return
        now = self._clock()
        if self._last_attempt is not None and now - self._last_attempt < self.min_interval:
            return
        self._last_attempt = now
        self._fetch = asyncio.ensure_future(self._load())
        await asyncio.shield(self._fetch)

    async def _load(self) -> None:
        self.fetches += 1
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                resp = await self._session().get(self.url, allow_redirects=False)
                async with resp:
                    body = await resp.content.read(JWKS_MAX_BYTES + 1)
                    status = resp.status
            if status != 200 or len(body) > JWKS_MAX_BYTES:
                raise ValueError(f"HTTP {status}, {len(body)} bytes")
            keys = parse_jwks(json.loads(body))
        except (
            aiohttp.ClientError,
            OSError,
            TimeoutError,
            ValueError,
            errors.RegistryError,
        ) as exc:
            log.warning("JWKS fetch failed", extra={"jwks": self.url, "error": type(exc).__name__})
            return
        self._keys = keys
        self.fetched = True
        log.info("JWKS loaded", extra={"jwks": self.url, "keys": sorted(keys)})

    def close(self) -> None:
        if self._fetch is not None:
            self._fetch.cancel()


def parse_jwks(doc: Any) -> dict[str, tuple[PublicKey, str | None]]:
    """``{kid: (public key, alg or None)}`` of a JWKS document. Unusable entries are skipped.
    Raises ValueError when the document is not a JWKS."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("not a JWKS document")
    out: dict[str, tuple[PublicKey, str | None]] = {}
    for entry in doc["keys"][:JWKS_MAX_KEYS]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig" or entry.get("kty") not in ("EC", "RSA"):
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        alg = entry.get("alg") if isinstance(entry.get("alg"), str) else None
        out[entry["kid"]] = (jwk.key, alg)
    return out


class UpstreamTokens:
    """Token verification and challenges for one token-mode upstream (module docstring)."""

    def __init__(
        self,
        upstream: UpstreamConfig,
        session: SessionProvider,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        min_interval: float = MIN_REFRESH_INTERVAL,
    ) -> None:
        assert upstream.auth is not None
        self.upstream = upstream
        self.config: UpstreamAuth = upstream.auth
        self.keys = JwksKeys(self.config.jwks, session, min_interval=min_interval, clock=monotonic)
        self._session = session
        self._clock = clock
        self._monotonic = monotonic
        self._min_interval = min_interval
        self._realm = self.config.realm
        self._service = self.config.service
        self._learn_attempt: float | None = None

    # -- challenges ------------------------------------------------------------------------
    async def challenge(self, scopes: Sequence[Access] = (), error: str | None = None) -> str:
        """``Bearer realm="...",service="..."[,scope="..."][,error="..."]``. Raises
        Unavailable when the realm is neither configured nor learnable right now."""
        realm, service = await self._realm_and_service()
        value = f"Bearer realm={_quote(realm)},service={_quote(service)}"
        scope = " ".join(str(a) for a in scopes if a.actions)
        if scope:
            value += f",scope={_quote(scope)}"
        if error:
            value += f",error={_quote(error)}"
        return value

    async def unauthorized(
        self, scopes: Sequence[Access] = (), error: str | None = None, message: str | None = None
    ) -> errors.RegistryError:
        """401 UNAUTHORIZED with the challenge and registry:2's ``detail`` (the access the
        request needs)."""
        detail = [
            {"Type": a.type, "Name": a.name, "Action": action}
            for a in scopes
            for action in a.actions
        ]
        return errors.Unauthorized(
            detail or None,
            message=message,
            headers={"WWW-Authenticate": await self.challenge(scopes, error)},
        )

    async def _realm_and_service(self) -> tuple[str, str]:
        if self._realm is None or self._service is None:
            await self._learn()
        if self._realm is None or self._service is None:
            raise errors.Unavailable(message="the upstream's token service is not known yet")
        return self._realm, self._service

    async def _learn(self) -> None:
        """Ask the upstream's ``/v2/`` once per ``min_interval`` for its Bearer challenge."""
        now = self._monotonic()
        if self._learn_attempt is not None and now - self._learn_attempt < self._min_interval:
            return
        self._learn_attempt = now
        url = self.upstream.url.rstrip("/") + "/v2/"
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                resp = await self._session().get(url, allow_redirects=False)
                async with resp:
                    values = resp.headers.getall("WWW-Authenticate", [])
        except (aiohttp.ClientError, OSError, TimeoutError, errors.RegistryError) as exc:
            log.warning("upstream challenge unavailable", extra={"error": type(exc).__name__})
            return
        for ch in parse_challenges(values):
            if ch.scheme == "bearer" and ch.realm:
                self._realm = self._realm or ch.realm
                self._service = self._service or ch.service or ""
                return

    # -- verification ----------------------------------------------------------------------
    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token of this upstream. Raises Unauthorized (bad, foreign,
        expired token: the reason, never the token) and Unavailable (keys not fetchable)."""
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError):
            raise errors.Unauthorized(message="malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise errors.Unauthorized(message="unsupported token algorithm")
        if not isinstance(kid, str) or not kid:
            raise errors.Unauthorized(message="token names no signing key")
        found = await self.keys.key(kid)
        if found is None:
            raise errors.Unauthorized(message="token signed by an unknown key")
        key, key_alg = found
        if key_alg is not None and key_alg != alg:
            raise errors.Unauthorized(message="token algorithm does not match its key")
        _, service = await self._service_for_audience()
        try:
            return decode_checked(
                token,
                key,
                alg,
                audience=service,
                issuer=self.config.issuer,
                leeway=LEEWAY,
                now=self._clock(),
            )
        except TokenRejected as exc:
            raise errors.Unauthorized(message=str(exc)) from None

    async def _service_for_audience(self) -> tuple[str | None, str]:
        if self._service is None:
            await self._learn()
        if self._service is None:
            raise errors.Unavailable(message="the upstream's token service is not known yet")
        return self._realm, self._service

    def close(self) -> None:
        self.keys.close()
