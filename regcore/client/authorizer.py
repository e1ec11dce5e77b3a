"""What a :class:`~regcore.client.transport.Transport` sends as ``Authorization`` to its upstream.

One :class:`Authorizer` per upstream holds the configured credentials (a static token, or a
username and password) and what the upstream told us about its scheme, and guarantees:

* A static token is always sent as ``Bearer`` and never replaced; a 401 is then final.
* A 401 with a ``Bearer`` challenge is answered by a token from the realm (Basic credentials
  to the realm only when :func:`~regcore.client.auth.may_send_credentials` says so, naming
  the ``account``); a refused token is forgotten (only it) before a fresh one is fetched, and a
  token equal to the refused one is not retried. A ``Basic`` challenge is answered with the
  configured credentials, once.
* Once the upstream is known to use Bearer (or Basic), :meth:`Authorizer.authorization` gives
  the header *before* the request: a cached or fresh token for the scopes (or the Basic one).
* Tokens are cached per (upstream, realm, service, scopes) in a
  :class:`~regcore.client.auth.TokenCache` (shared when one is given) and fetched once per
  key even under concurrency (single flight): concurrent callers await one fetch, and its
  failure is raised to each of them. :meth:`Authorizer.close` cancels fetches in flight.
* Token fetches go through the transport's own exchange (retries, timeouts, redirects without
  credentials) and raise :class:`errors.UpstreamUnavailable` for a realm that is not an
  absolute http(s) URL or an answer without a token, and the error
  :func:`~regcore.client.status.error_for` maps a non-200 answer to
  (:class:`errors.Unauthorized`, :class:`errors.Denied`, :class:`errors.TooManyRequests`...).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from regcore import errors
from regcore.client.auth import (
    Challenge,
    TokenCache,
    may_send_credentials,
    merge_scopes,
    parse_challenges,
    token_from_response,
)
from regcore.client.status import error_for, redact

# (method, url, headers, data, authorization, origin the authorization may go to, idempotent)
Exchange = Callable[
    [str, URL, CIMultiDict[str], Any, str | None, URL, bool], Awaitable[aiohttp.ClientResponse]
]
_TOKEN_BODY_LIMIT = 1 << 20


class Authorizer:
    """The ``Authorization`` for one upstream at ``base``; token requests go through
    ``exchange`` (the transport's retrying, redirect-following send). Not thread-safe: use it
    from one event loop."""

    def __init__(
        self,
        base: URL,
        exchange: Exchange,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        token_cache: TokenCache | None = None,
    ) -> None:
        self.base = base
        self._exchange = exchange
        self._basic = basic_header(username, password or "") if username is not None else None
        self._username = username
        self._static = f"Bearer {token}" if token else None
        self.tokens = token_cache if token_cache is not None else TokenCache()
        self._scheme: str | None = None  # "bearer" / "basic" once the upstream told us
        self._bearer: Challenge | None = None
        self._inflight: dict[tuple[str, ...], asyncio.Task[str]] = {}

    def close(self) -> None:
        """Cancel token fetches in flight."""
        for task in list(self._inflight.values()):
            task.cancel()
        self._inflight.clear()

    async def authorization(self, scopes: tuple[str, ...]) -> str | None:
        """What to send before any challenge: static token, Basic, or a cached/fresh Bearer."""
        if self._static is not None:
            return self._static
        if self._scheme == "basic":
            return self._basic
        if self._scheme == "bearer" and self._bearer is not None:
            return "Bearer " + await self._token(self._bearer, scopes)
        return None

    async def answer_challenge(
        self, resp: aiohttp.ClientResponse, scopes: tuple[str, ...], *, used: str | None
    ) -> str | None:
        """The ``Authorization`` to retry a 401 with, or ``None`` when retrying is pointless."""
        if self._static is not None:
            return None
        challenges = parse_challenges(resp.headers.getall("WWW-Authenticate", []))
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        if bearer is not None:
            self._scheme, self._bearer = "bearer", bearer
            want = merge_scopes(scopes, bearer.scopes)
            stale = used[len("Bearer ") :] if used and used.startswith("Bearer ") else None
            if stale is not None:  # the token we sent was refused: forget it (only it)
                for key_scopes in {scopes, want}:
                    self.tokens.invalidate(self._token_key(bearer, key_scopes), stale)
            token = await self._token(bearer, want, alias=scopes)
            if used == "Bearer " + token:
                return None
            return "Bearer " + token
        if any(c.scheme == "basic" for c in challenges) and self._basic is not None:
            self._scheme = "basic"
            return None if used == self._basic else self._basic
        return None

    def _token_key(self, challenge: Challenge, scopes: tuple[str, ...]) -> tuple[str, ...]:
        return (str(self.base), challenge.realm or "", challenge.service or "", *sorted(scopes))

    async def _token(
        self, challenge: Challenge, scopes: tuple[str, ...], *, alias: tuple[str, ...] | None = None
    ) -> str:
        """A cached token for ``scopes`` or one fetched (once, shared by concurrent callers)."""
        key = self._token_key(challenge, scopes)
        token = self.tokens.get(key)
        if token is None:
            task = self._inflight.get(key)
            if task is None:
                task = asyncio.get_running_loop().create_task(
                    self._fetch_token(challenge, scopes, key)
                )
                self._inflight[key] = task
                task.add_done_callback(partial(self._fetch_done, key))
            token = await asyncio.shield(task)
        if alias is not None and alias != scopes:
            self.tokens.alias(key, self._token_key(challenge, alias))
        return token

    def _fetch_done(self, key: tuple[str, ...], task: asyncio.Task[str]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failure is re-raised to every awaiting caller

    async def _fetch_token(
        self, challenge: Challenge, scopes: tuple[str, ...], key: tuple[str, ...]
    ) -> str:
        realm = URL(challenge.realm or "")
        if not realm.is_absolute() or realm.scheme not in ("http", "https"):
            raise errors.UpstreamUnavailable("token realm is not an absolute http(s) URL")
        query: list[tuple[str, str]] = []
        if challenge.service:
            query.append(("service", challenge.service))
        query.extend(("scope", s) for s in scopes)
        auth = None
        if self._basic is not None and may_send_credentials(self.base, realm):
            auth = self._basic
            if self._username:
                query.append(("account", self._username))
        url = realm.extend_query(query) if query else realm
        headers = CIMultiDict({"Accept": "application/json", "Accept-Encoding": "identity"})
        resp = await self._exchange("GET", url, headers, None, auth, realm, True)
        async with resp:
            if resp.status != 200:
                body = await resp.content.read(64 * 1024)
                raise error_for(
                    resp.status, "token", method="GET", url=realm, headers=resp.headers, body=body
                )
            body = await resp.content.read(_TOKEN_BODY_LIMIT)
        try:
            parsed = token_from_response(json.loads(body))
        except ValueError:
            parsed = None
        if parsed is None:
            raise errors.UpstreamUnavailable(f"token service {redact(realm)} returned no token")
        token, expires_in = parsed
        self.tokens.put(key, token, float(expires_in))
        return token


def basic_header(username: str, password: str) -> str:
    """``Basic base64(user:password)``."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
