"""One upstream's HTTP layer: authentication, redirects without credentials, retries, timeouts.

:meth:`Transport.send` returns the final :class:`aiohttp.ClientResponse` (any status; the
caller maps it with :func:`regcore.client.status.error_for`) and guarantees:

* **Auth.** ``Authorization`` is only ever sent to the upstream's own origin (scheme, host,
  port). A 401 with a ``Bearer`` challenge is answered by a token from the realm (Basic
  credentials to the realm only when :func:`~regcore.client.auth.may_send_credentials` says
  so); tokens are cached per scope and fetched once per scope even under concurrency
  (single flight); the request is retried once with the fresh token. A ``Basic`` challenge
  is answered with the configured credentials. After that, a 401 is returned as is.
  Once the upstream is known to use Bearer, tokens are fetched *before* the request.
  The header to send is decided by :class:`regcore.client.authorizer.Authorizer`.
* **Redirects** are never followed by aiohttp; up to ``max_redirects`` hops are followed
  here, ``Authorization`` is stripped for any hop to another origin (CDNs, signed URLs).
* **TLS.** With ``tls`` (:class:`regcore.tlsclient.ClientTLSContexts`), ``https`` hops to the
  upstream's own origin use its ``own`` context (extra CA, client certificate, server name);
  hops anywhere else use ``foreign`` (extra CA only): a client certificate or disabled
  verification never reaches another host. A certificate that is not accepted, or a failed
  handshake, is not retried and raises :class:`errors.UpstreamUnavailable` naming the
  reason OpenSSL gave (``certificate verify failed: unable to get local issuer
  certificate``).
* **Retries** only for idempotent requests (GET/HEAD): connection errors and 502/503/504/429,
  exponential backoff with jitter; ``Retry-After`` is respected up to ``max_retry_after``
  (longer → no retry, the 429 is returned at once). Timeouts are not retried, so a hung
  upstream costs at most ``connect_timeout`` + ``read_timeout`` per HTTP exchange (a request
  that needs a token is up to three exchanges: request, realm, retry).
* **Errors** raised: :class:`errors.UpstreamTimeout` (connect or read timeout),
  :class:`errors.UpstreamUnavailable` (connection refused/reset after retries, too many
  redirects, a token endpoint without a token), :class:`errors.Unauthorized`,
  :class:`errors.Denied`, :class:`errors.TooManyRequests` from the token endpoint.
* ``on_request(method, url, status)`` is called for every HTTP exchange (each redirect hop
  and token fetch included; status 0 when no response came); the URL has no query string.
"""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from regcore import USER_AGENT, errors
from regcore.client.auth import TokenCache, same_origin
from regcore.client.authorizer import Authorizer
from regcore.client.status import redact, retry_after_seconds, tls_failure
from regcore.tlsclient import ClientTLSContexts

RequestHook = Callable[[str, str, int], None]
RETRY_STATUSES = frozenset({429, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_INLINE_BODY_LIMIT = 512 * 1024


class Transport:
    """HTTP to one upstream registry. Create inside or outside a loop; close with :meth:`close`."""

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        max_retry_after: float = 10.0,
        max_redirects: int = 5,
        user_agent: str = USER_AGENT,
        on_request: RequestHook | None = None,
        token_cache: TokenCache | None = None,
        tls: ClientTLSContexts | None = None,
    ) -> None:
        self.base = URL(base_url.rstrip("/"))
        if not self.base.is_absolute() or self.base.scheme not in ("http", "https"):
            raise ValueError("base_url must be an absolute http(s) URL")
        self._session = session
        self._owns_session = session is None
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self.on_request = on_request
        self._auth = Authorizer(
            self.base,
            self._with_retries,
            username=username,
            password=password,
            token=token,
            token_cache=token_cache,
        )
        self._random = random.Random()
        self.tls = tls

    @property
    def tokens(self) -> TokenCache:
        """The bearer token cache (the one given as ``token_cache``, if any)."""
        return self._auth.tokens

    # -- session ------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        """The session in use (created on first use when none was given)."""
        if self._session is None or (self._owns_session and self._session.closed):
            self._session = aiohttp.ClientSession(
                timeout=self.timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": self.user_agent},
            )
        return self._session

    async def close(self) -> None:
        """Cancel token fetches in flight; close the session if this transport created it."""
        self._auth.close()
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    def url(self, target: str | URL) -> URL:
        """An absolute URL for ``/v2/...`` (relative to the base) or an absolute URL as is."""
        if isinstance(target, URL):
            return target if target.is_absolute() else self.base.join(target)
        if target.startswith(("http://", "https://")):
            return URL(target, encoded=True)
        return URL(str(self.base) + target, encoded=True)

    # -- the request ---------------------------------------------------------------------

    async def send(
        self,
        method: str,
        target: str | URL,
        *,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        scopes: Iterable[str] = (),
        idempotent: bool | None = None,
    ) -> aiohttp.ClientResponse:
        """Send with auth, redirects and retries; return the final response (caller releases)."""
        method = method.upper()
        url = self.url(target)
        scopes = tuple(scopes)
        if idempotent is None:
            idempotent = method in ("GET", "HEAD")
        replayable = data is None or isinstance(data, (bytes, bytearray, memoryview, str))
        base_headers = CIMultiDict(headers or {})
        base_headers.setdefault("Accept-Encoding", "identity")
        auth = await self._auth.authorization(scopes)
        resp = await self._with_retries(
            method, url, base_headers, data, auth, self.base, idempotent
        )
        if resp.status != 401 or not same_origin(resp.url, self.base) or not replayable:
            return resp
        try:
            retry_auth = await self._auth.answer_challenge(resp, scopes, used=auth)
        except BaseException:
            resp.release()
            raise
        if retry_auth is None:
            return resp
        resp.release()
        return await self._with_retries(
            method, url, base_headers, data, retry_auth, self.base, idempotent
        )

    async def _with_retries(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        data: Any,
        auth: str | None,
        auth_origin: URL,
        idempotent: bool,
    ) -> aiohttp.ClientResponse:
        attempt = 0
        while True:
            try:
                resp = await self._follow(method, url, headers, data, auth, auth_origin)
            except TimeoutError as exc:
                self._hook(method, url, 0)
                raise errors.UpstreamTimeout(f"{method} {redact(url)} timed out") from exc
            except aiohttp.ClientSSLError as exc:
                self._hook(method, url, 0)
                raise errors.UpstreamUnavailable(
                    f"{method} {redact(url)} failed: {tls_failure(exc)}"
                ) from exc
            except aiohttp.ClientConnectionError as exc:
                self._hook(method, url, 0)
                if idempotent and attempt < self.retries:
                    await asyncio.sleep(self._delay(attempt))
                    attempt += 1
                    continue
                raise errors.UpstreamUnavailable(
                    f"{method} {redact(url)} failed: {type(exc).__name__}"
                    + self._disconnect_hint(url, exc)
                ) from exc
            except aiohttp.ClientError as exc:
                self._hook(method, url, 0)
                raise errors.UpstreamUnavailable(
                    f"{method} {redact(url)} failed: {type(exc).__name__}"
                ) from exc
            if not (idempotent and resp.status in RETRY_STATUSES and attempt < self.retries):
                return resp
            wait = retry_after_seconds(resp.headers.get("Retry-After"))
            if wait is not None and wait > self.max_retry_after:
                return resp
            resp.release()
            await asyncio.sleep(max(wait or 0.0, self._delay(attempt)))
            attempt += 1

    async def _follow(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        data: Any,
        auth: str | None,
        auth_origin: URL,
    ) -> aiohttp.ClientResponse:
        session = self.session()
        for _hop in range(self.max_redirects + 1):
            hop_headers = CIMultiDict(headers)
            if auth is not None and same_origin(url, auth_origin):
                hop_headers["Authorization"] = auth
            resp = await session.request(
                method,
                url,
                headers=hop_headers,
                data=_fresh_body(data),
                allow_redirects=False,
                timeout=self.timeout,
                auto_decompress=False,
                **self._tls_options(url),
            )
            self._hook(method, url, resp.status)
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_STATUSES or not location:
                return resp
            resp.release()
            if data is not None and not isinstance(data, (bytes, bytearray, memoryview, str)):
                raise errors.UpstreamUnavailable(
                    f"{method} {redact(url)} redirected a streamed body"
                )
            url = resp.url.join(URL(location, encoded=True))
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, data = "GET", None
        raise errors.UpstreamUnavailable(f"too many redirects from {redact(self.base)}")

    def _tls_options(self, url: URL) -> dict[str, Any]:
        if self.tls is None or url.scheme != "https":
            return {}
        return self.tls.request_options(own_origin=same_origin(url, self.base))

    def _disconnect_hint(self, url: URL, exc: BaseException) -> str:
        """Under TLS 1.3 a server that wants a client certificate and got none closes the
        connection after the handshake: aiohttp only sees a disconnect. Say so."""
        if not isinstance(exc, aiohttp.ServerDisconnectedError) or url.scheme != "https":
            return ""
        if self.tls is not None and self.tls.client_certificate:
            return ""
        return (
            " (no TLS client certificate was presented: a server that requires one closes"
            " the connection)"
        )

    def _delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return base * self._random.uniform(0.5, 1.0)

    def _hook(self, method: str, url: URL, status: int) -> None:
        if self.on_request is not None:
            self.on_request(method, redact(url), status)


def _fresh_body(data: Any) -> Any:
    """Large byte bodies go as a fresh BytesIO per send (aiohttp warns about big bytes and a
    fresh object keeps the body replayable for auth retries and redirects)."""
    if isinstance(data, (bytes, bytearray, memoryview)) and len(data) > _INLINE_BODY_LIMIT:
        return io.BytesIO(data)
    return data
