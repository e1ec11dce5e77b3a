"""One :class:`~regcore.client.RegistryClient` per configured upstream, on one pooled session.

- :func:`open_session` makes the shared aiohttp session: a pooled connector (keep-alive,
  DNS cache), no session-wide timeout (each client applies its upstream's connect/read
  timeouts), and the metrics trace that counts every upstream exchange.
- :class:`Upstreams` owns the clients: configured credentials (``username`` with ``password``
  or ``password_file``, or a ready Bearer token from ``token_file``) are read once at start.
  :meth:`Upstreams.for_credentials` builds a short-lived client that acts with a *client's*
  own ``Authorization`` (private upstreams, PROTOCOL.md 13); it shares the pool.
- :class:`UpstreamSource` is the :class:`edge.sources.BlobSource` the fill machinery reads an
  upstream blob from (``open(offset)`` resumes with Range).

Nothing here caches content; errors are regcore.errors subclasses raised by the client.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp

from regcore import errors
from regcore.config import UpstreamConfig

if TYPE_CHECKING:
    from regcore.client import RegistryClient

POOL_LIMIT = 256
POOL_LIMIT_PER_HOST = 64
BACKOFF = 0.2
AUTH_CHECK_RETRIES = 0

ClientFactory = Callable[..., Any]


def is_private(upstream: UpstreamConfig) -> bool:
    """``private: true`` upstreams tie every cached answer to an upstream access check."""
    return bool(getattr(upstream, "private", False))


def open_session(trace_configs: list[aiohttp.TraceConfig] | None = None) -> aiohttp.ClientSession:
    """The shared upstream session. Caller closes it. Redirects are the client's business."""
    connector = aiohttp.TCPConnector(
        limit=POOL_LIMIT, limit_per_host=POOL_LIMIT_PER_HOST, ttl_dns_cache=300, enable_cleanup_closed=True
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        trace_configs=trace_configs or [],
        auto_decompress=False,
        raise_for_status=False,
    )


class Upstreams:
    """The configured upstreams' clients by upstream name. Not thread-safe; one event loop."""

    def __init__(
        self,
        configs: tuple[UpstreamConfig, ...],
        session: aiohttp.ClientSession,
        *,
        clients: Mapping[str, RegistryClient] | None = None,
        client_factory: ClientFactory | None = None,
    ) -> None:
        if client_factory is None:
            from regcore.client import RegistryClient

            client_factory = RegistryClient
        self.session = session
        self.configs = {u.name: u for u in configs}
        self._factory = client_factory
        self._clients: dict[str, RegistryClient] = dict(clients or {})
        for u in configs:
            if u.name not in self._clients:
                self._clients[u.name] = self._make(u, u.username, u.read_password(), u.read_token())

    def _make(
        self,
        upstream: UpstreamConfig,
        username: str | None,
        password: str | None,
        token: str | None,
        *,
        retries: int | None = None,
    ) -> RegistryClient:
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

    def client(self, name: str) -> RegistryClient:
        """The client of upstream ``name``. Raises KeyError."""
        return self._clients[name]

    def has_credentials(self, name: str) -> bool:
        u = self.configs[name]
        return bool(u.username or u.password or u.password_file or u.token_file)

    def for_credentials(self, upstream: UpstreamConfig, authorization: str) -> RegistryClient:
        """A client acting with a client's ``Authorization`` header value (Basic or Bearer).

        Raises:
            Unauthorized: the header is neither ``Basic <base64 user:pass>`` nor ``Bearer <t>``.
        """
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
        """Close clients that own resources (the shared session is closed by its owner)."""
        for c in self._clients.values():
            close = getattr(c, "close", None)
            if close is not None and not getattr(c, "_session_shared", True):
                await close()


class UpstreamSource:
    """A blob at an upstream as a fill source: ``open(offset)`` -> ``(total_size, chunks)``.

    Resumes with ``Range: bytes=offset-`` (the client checks the 206). Raises what the
    client raises: BlobUnknown, Unauthorized, Denied, TooManyRequests, UpstreamUnavailable,
    UpstreamTimeout.
    """

    def __init__(self, client: RegistryClient, repo: str, digest: str) -> None:
        self.client = client
        self.repo = repo
        self.digest = digest

    def __repr__(self) -> str:
        return f"UpstreamSource({self.client!r}, {self.repo!r}, {self.digest!r})"

    async def open(self, offset: int = 0) -> tuple[int, AsyncIterator[bytes]]:
        stream = await _enter(self.client.blob_stream(self.repo, self.digest, offset=offset))
        return stream.total_size, _chunks(stream)


async def _enter(obj: object) -> object:
    """``blob_stream`` may be a coroutine or an async context manager; return the stream."""
    if hasattr(obj, "__aenter__"):
        return await obj.__aenter__()  # type: ignore[attr-defined]
    return await obj  # type: ignore[misc]


async def _chunks(stream: object) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:  # type: ignore[attr-defined]
            yield chunk
    finally:
        close = getattr(stream, "close", None) or getattr(stream, "aclose", None)
        if close is not None:
            res = close()
            if hasattr(res, "__await__"):
                await res
