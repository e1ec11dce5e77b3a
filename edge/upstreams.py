"""One :class:`~regcore.client.RegistryClient` per configured upstream, on one pooled session.

- :func:`open_session` makes the shared aiohttp session: a pooled connector (keep-alive,
  DNS cache), no session-wide timeout (each client applies its upstream's connect/read
  timeouts), and the metrics trace that counts every upstream exchange.
- :class:`Upstreams` owns that session and the clients: :meth:`Upstreams.open` opens the
  session and makes one client per upstream (configured credentials -- ``username`` with
  ``password`` or ``password_file``, or a ready Bearer token from ``token_file`` -- are read
  then, once); :meth:`Upstreams.close` closes them. Between the two ``client()`` answers, before
  and after it raises 503 UNAVAILABLE (the edge is starting or stopping).
  :meth:`Upstreams.for_credentials` builds a short-lived client that acts with a *client's*
  own ``Authorization`` (private upstreams, PROTOCOL.md 13); it shares the pool.
- :class:`AccessChecker` decides which client a request may use: the upstream's own for a
  public upstream, after an access check with the caller's credentials for a private one.
- The fill source for an upstream blob is :class:`edge.sources.UpstreamSource` over one of
  these clients; peer sources (:class:`edge.peers.PeerSources`) use the same session.

Nothing here caches content; errors are regcore.errors subclasses raised by the client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import aiohttp

from edge.upstreamconfig import UpstreamConfig
from regcore import USER_AGENT, errors

if TYPE_CHECKING:
    from edge.upstreamclient import UpstreamClient

POOL_LIMIT = 256
POOL_LIMIT_PER_HOST = 64
BACKOFF = 0.2
AUTH_CHECK_RETRIES = 0
CREDENTIAL_CLIENTS = 256

ClientFactory = Callable[..., "UpstreamClient"]


def is_private(upstream: UpstreamConfig) -> bool:
    """``private: true`` upstreams tie every cached answer to an upstream access check."""
    return bool(getattr(upstream, "private", False))


def open_session(
    trace_configs: Sequence[aiohttp.TraceConfig] | None = None,
) -> aiohttp.ClientSession:
    """The shared upstream session. Caller closes it. Redirects are the client's business."""
    connector = aiohttp.TCPConnector(
        limit=POOL_LIMIT,
        limit_per_host=POOL_LIMIT_PER_HOST,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        trace_configs=list(trace_configs or ()),
        auto_decompress=False,
        raise_for_status=False,
        headers={"User-Agent": USER_AGENT},
        cookie_jar=aiohttp.DummyCookieJar(),  # upstream cookies are never replayed
    )


class Upstreams:
    """The upstream session and the configured upstreams' clients by upstream name.

    ``clients`` (upstream name -> client) replace configured ones and are left open at
    :meth:`close` (their owner closes them). Not thread-safe; one event loop.
    """

    def __init__(
        self,
        configs: tuple[UpstreamConfig, ...],
        *,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        clients: Mapping[str, UpstreamClient] | None = None,
        client_factory: ClientFactory | None = None,
    ) -> None:
        if client_factory is None:
            from regcore.client import RegistryClient

            client_factory = RegistryClient
        self.configs = {u.name: u for u in configs}
        self._trace_configs = list(trace_configs)
        self._factory = client_factory
        self._session: aiohttp.ClientSession | None = None
        self._given: dict[str, UpstreamClient] = dict(clients or {})
        self._clients: dict[str, UpstreamClient] = {}
        self._by_credentials: OrderedDict[tuple[str, str], UpstreamClient] = OrderedDict()

    async def open(self) -> None:
        """Open the session and make the clients. Raises OSError (a credentials file cannot
        be read) and ValueError; nothing stays open then."""
        session = open_session(self._trace_configs)
        self._session = session
        try:
            for u in self.configs.values():
                if u.name not in self._given:
                    self._clients[u.name] = self._make(
                        u, u.username, u.read_password(), u.read_token()
                    )
        except BaseException:
            await self.close()
            raise
        self._clients.update(self._given)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared upstream session. Raises Unavailable unless open."""
        if self._session is None:
            raise errors.Unavailable(message="edge is starting or stopping")
        return self._session

    def _make(
        self,
        upstream: UpstreamConfig,
        username: str | None,
        password: str | None,
        token: str | None,
        *,
        retries: int | None = None,
    ) -> UpstreamClient:
        return self._factory(
            upstream.url,
            session=self.session,
            username=username,
            password=password,
            token=token,
            connect_timeout=upstream.connect_timeout,
            read_timeout=upstream.read_timeout,
            retries=upstream.retries if retries is None else retries,
            backoff=BACKOFF,
        )

    def client(self, name: str) -> UpstreamClient:
        """The client of upstream ``name``. Raises Unavailable unless open, KeyError for an
        upstream that is not configured."""
        if self._session is None:
            raise errors.Unavailable(message="edge is starting or stopping")
        return self._clients[name]

    def has_credentials(self, name: str) -> bool:
        u = self.configs[name]
        return bool(u.username or u.password or u.password_file or u.token_file)

    def for_credentials(self, upstream: UpstreamConfig, authorization: str) -> UpstreamClient:
        """A client acting with a client's ``Authorization`` header value (Basic or Bearer).

        Raises:
            Unauthorized: the header is neither ``Basic <base64 user:pass>`` nor ``Bearer <t>``.
        """
        key = (upstream.name, hashlib.sha256(authorization.encode()).hexdigest())
        client = self._by_credentials.get(key)
        if client is not None:
            self._by_credentials.move_to_end(key)
            return client
        client = self._credentials_client(upstream, authorization)
        self._by_credentials[key] = client
        while len(self._by_credentials) > CREDENTIAL_CLIENTS:
            self._by_credentials.popitem(last=False)
        return client

    def _credentials_client(self, upstream: UpstreamConfig, authorization: str) -> UpstreamClient:
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "basic" and value:
            try:
                user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise errors.Unauthorized(message="malformed Basic credentials") from None
            if not sep:
                raise errors.Unauthorized(message="malformed Basic credentials")
            return self._make(upstream, user, password, None, retries=AUTH_CHECK_RETRIES)
        if scheme.lower() == "bearer" and value:
            return self._make(upstream, None, None, value, retries=AUTH_CHECK_RETRIES)
        raise errors.Unauthorized(message="unsupported authorization scheme")

    async def close(self) -> None:
        """Close every client this object made (token fetches in flight are cancelled), then
        the session. Clients passed in are left to their owner. Idempotent."""
        made = [c for n, c in self._clients.items() if n not in self._given]
        self._clients.clear()
        session, self._session = self._session, None
        try:
            for client in [*made, *self._by_credentials.values()]:
                await client.close()
        finally:
            self._by_credentials.clear()
            if session is not None:
                await session.close()


class AccessChecker:
    """Ties cached content of ``private: true`` upstreams to the client's own upstream access.

    For such an upstream every request must carry ``Authorization`` (Basic ``user:password``,
    which the edge uses for the upstream's token dance, or a Bearer token the upstream
    accepts); without it the answer is 401 with a Basic challenge. The edge then asks the
    upstream with those credentials -- a ``HEAD`` of the very blob or manifest (tags list:
    ``GET`` of one tag) -- and remembers a success for ``ttl`` seconds per (hash of the
    credentials, upstream, repository, object). Only then is anything, cached or not,
    served. A refusal passes on as 401 UNAUTHORIZED / 403 DENIED / 404; an upstream that
    cannot answer the check gives 502/504 (private content is not served blind).
    Public upstreams are not checked. Bounded: at most ``max_entries`` remembered checks.
    """

    def __init__(
        self,
        upstreams: Upstreams,
        *,
        clock: Callable[[], float],
        ttl: float = 30.0,
        on_result: Callable[[str], None] | None = None,
        max_entries: int = 10_000,
    ) -> None:
        self.upstreams = upstreams
        self.clock = clock
        self.ttl = ttl
        self.on_result = on_result
        self.max_entries = max_entries
        self._allowed: dict[tuple[str, ...], float] = {}

    async def client_for(
        self, upstream: UpstreamConfig, authorization: str | None, repo: str, kind: str, ref: str
    ) -> UpstreamClient:
        """The client to fetch ``repo``'s ``kind`` ``ref`` from ``upstream`` with: the
        upstream's own for a public one; for a private one after :meth:`check` passed.
        Raises what :meth:`check` raises, and Unavailable while the edge starts or stops."""
        if is_private(upstream):
            return await self.check(upstream, authorization, repo, kind, ref)
        return self.upstreams.client(upstream.name)

    async def check(
        self, upstream: UpstreamConfig, authorization: str | None, repo: str, kind: str, ref: str
    ) -> UpstreamClient:
        """The client to fetch with after a passed check (configured credentials if any,
        else the caller's). Raises Unauthorized, Denied, BlobUnknown, ManifestUnknown,
        UpstreamUnavailable, UpstreamTimeout."""
        challenge = {"WWW-Authenticate": f'Basic realm="quayside edge ({upstream.name})"'}
        if not authorization:
            self._count("missing")
            raise errors.Unauthorized(
                {"upstream": upstream.name},
                message="this upstream is private: credentials required",
                headers=challenge,
            )
        user_client = self.for_credentials(upstream, authorization)
        fetch_client = (
            self.upstreams.client(upstream.name)
            if self.upstreams.has_credentials(upstream.name)
            else user_client
        )
        key = (hashlib.sha256(authorization.encode()).hexdigest(), upstream.name, repo, kind, ref)
        now = self.clock()
        if self._allowed.get(key, 0.0) > now:
            self._count("cached")
            return fetch_client
        try:
            async with asyncio.timeout(upstream.connect_timeout + upstream.read_timeout):
                await self._ask(user_client, repo, kind, ref)
        except TimeoutError:
            raise errors.UpstreamTimeout({"check": kind}) from None
        except errors.Unauthorized as exc:
            self._count("denied")
            raise errors.Unauthorized(
                exc.detail, message="the upstream refused these credentials", headers=challenge
            ) from None
        except (errors.Denied, errors.BlobUnknown, errors.ManifestUnknown, errors.NameUnknown):
            self._count("denied")
            raise
        self._count("allowed")
        if len(self._allowed) >= self.max_entries:
            self._allowed = {k: v for k, v in self._allowed.items() if v > now}
            if len(self._allowed) >= self.max_entries:
                self._allowed.clear()
        self._allowed[key] = now + self.ttl
        return fetch_client

    def for_credentials(self, upstream: UpstreamConfig, authorization: str) -> UpstreamClient:
        return self.upstreams.for_credentials(upstream, authorization)

    @staticmethod
    async def _ask(client: UpstreamClient, repo: str, kind: str, ref: str) -> None:
        if kind == "blob":
            await client.head_blob(repo, ref)
        elif kind == "manifest":
            await client.head_manifest(repo, ref)
        else:
            await client.list_tags(repo, n=1)

    def _count(self, result: str) -> None:
        if self.on_result is not None:
            self.on_result(result)
