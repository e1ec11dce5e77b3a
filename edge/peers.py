"""Peer streaming between the edge nodes of a region.

Server side: ``GET /_quayside/peer/blobs/<digest>`` (HEAD too), registered with
:func:`add_routes`. It serves, in this order:

- the cached blob (zero-copy sendfile, Range), header ``X-Quayside-Fill: complete``;
- the fill of that digest in progress on this node, streamed as its bytes land (zero-copy:
  ``os.sendfile`` from the growing file, :meth:`edge.fill.Fill.spans`), with
  ``Content-Length`` (the total, or the range's length on 206 with ``Content-Range``) and
  ``X-Quayside-Fill: in-progress``; if that fill fails, the connection is cut short (the
  reader sees a payload error, never a clean end);
- otherwise 404 ``BLOB_UNKNOWN`` (the caller then checks the region lock and may take over).

Only ``Range: bytes=N-`` / ``bytes=N-M`` (one range) is understood; 416 when unsatisfiable.
With ``token`` set, requests must carry ``X-Quayside-Peer-Token: <token>`` (403 otherwise);
with ``require_client_cert`` (``tls.clientcas`` configured) also a TLS client certificate the
handshake verified against those CAs (403 otherwise, before the token is looked at).
The endpoint is meant for the region's private network; it bypasses upstream authorization.

Client side: :class:`PeerSource` (a :class:`~edge.sources.BlobSource` reading that endpoint,
``Range`` on reopen, :class:`~edge.sources.PeerMiss` on 404), :class:`PeerSources` (the
``peer_source`` callable :class:`~edge.fill.FillManager` wants, on the upstream session with
the region's token) and :func:`peer_source_factory` (the same on a given session).

The region's token: :class:`PeerToken` -- configured (``redis.peer_token``), else agreed
through Redis when the node starts (the first node's random token wins).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from edge.authtls import has_client_certificate
from edge.cache import BlobCache
from edge.fill import FillFailed, FillManager
from edge.sources import BlobSource, HttpSource, PeerMiss
from regcore import errors, zerocopy
from regcore.digest import Digest
from regcore.http import parse_range

if TYPE_CHECKING:
    from edge.regionlock import RegionLock
    from edge.upstreams import Upstreams

log = logging.getLogger(__name__)

PEER_PREFIX = "/_quayside/peer/blobs/"
FILL_HEADER = "X-Quayside-Fill"
TOKEN_HEADER = "X-Quayside-Peer-Token"
PEER_TOKEN_KEY = "quayside:peer-token"


def peer_blob_url(owner_url: str, digest: Digest) -> str:
    return f"{owner_url.rstrip('/')}{PEER_PREFIX}{digest}"


def add_routes(
    app: web.Application,
    fill_manager: FillManager,
    cache: BlobCache,
    *,
    token: str | Callable[[], str | None] | None = None,
    require_client_cert: bool = False,
) -> None:
    """Register the peer endpoint on ``app``.

    ``token`` a string: requests must present it. A callable: asked per request for the
    current region token; when it returns ``None`` (no region, token not agreed yet) every
    request is refused with 403 DENIED. ``None``: open (tests and trusted networks only).
    ``require_client_cert``: callers without a verified TLS client certificate get 403.
    """
    app.router.add_get(
        PEER_PREFIX + "{digest}",
        _handler(fill_manager, cache, token, require_client_cert),
        name="peer_blob",
    )


def _handler(
    fills: FillManager,
    cache: BlobCache,
    token: str | Callable[[], str | None] | None,
    require_client_cert: bool = False,
) -> Callable[[web.Request], object]:
    async def handle(request: web.Request) -> web.StreamResponse:
        if require_client_cert and not has_client_certificate(request):
            return errors.error_response(errors.Denied("peer client certificate required"))
        if token is not None:
            expected = token() if callable(token) else token
            presented = request.headers.get(TOKEN_HEADER, "")
            if expected is None or not hmac.compare_digest(presented.encode(), expected.encode()):
                return errors.error_response(errors.Denied("peer token missing or wrong"))
        try:
            digest = Digest.parse(request.match_info["digest"])
        except errors.RegistryError as exc:
            return errors.error_response(exc)
        headers = {"Docker-Content-Digest": str(digest), "Content-Type": "application/octet-stream"}
        blob = cache.lookup(digest)
        if blob is not None:
            try:
                return await zerocopy.file_response(
                    request,
                    blob.path,
                    headers={**headers, FILL_HEADER: "complete"},
                    etag=f'"{digest}"',
                )
            except FileNotFoundError:
                pass  # evicted since the lookup; maybe a fill is running
            except errors.RegistryError as exc:
                return errors.error_response(exc)
        fill = fills.active(digest)
        if fill is None:
            return errors.error_response(errors.BlobUnknown(str(digest)))
        try:
            total = await fill.size()
            span = parse_range(request.headers.get("Range"), total) if total else None
            start, end = span or (0, total - 1)
        except errors.RegistryError as exc:
            return errors.error_response(exc)
        headers[FILL_HEADER] = "in-progress"
        status = 200
        if request.headers.get("Range"):
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start + 1 if total else 0
        await zerocopy.prepare_unbuffered(request, resp)
        if request.method == "HEAD" or total == 0:
            await resp.write_eof()
            return resp
        try:  # each span zero-copy from the growing file, as it lands (the tail after commit)
            async with contextlib.aclosing(fill.spans(start, end)) as spans:
                async for fd, offset, count in spans:
                    await zerocopy.send_span(request, resp, fd, offset, count, fill.locate)
        except (FillFailed, EOFError) as exc:
            log.warning("peer stream of %s cut: %s", digest, exc)
            abort(request)
            return resp
        except ConnectionResetError:  # the reading node went away; the fill goes on
            return resp
        await resp.write_eof()
        return resp

    return handle


def abort(request: web.Request) -> None:
    """Cut a response already started: the client sees a reset / short body, never a clean end."""
    transport = request.transport
    if transport is not None:
        transport.abort()


class PeerSource(HttpSource):
    """Reads ``digest`` from the owner node's peer endpoint (``Range`` on reopen).

    Default timeouts: 2 s to connect, 15 s without a byte (an owner stalled that long is
    treated as failing; past the lock TTL without progress the waiter takes over).
    """

    description = "peer"

    def __init__(
        self,
        owner_url: str,
        digest: Digest,
        session: aiohttp.ClientSession,
        *,
        token: str | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> None:
        headers = {TOKEN_HEADER: token} if token else None
        timeout = timeout or aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=15)
        super().__init__(
            session, peer_blob_url(owner_url, digest), headers=headers, timeout=timeout
        )
        self.owner_url = owner_url
        self.digest = digest

    def not_found(self) -> Exception:
        return PeerMiss(f"{self.owner_url} has no fill of {self.digest}")


def peer_source_factory(
    session: aiohttp.ClientSession,
    *,
    token: str | None = None,
    timeout: aiohttp.ClientTimeout | None = None,
) -> Callable[[str, Digest], BlobSource]:
    """The ``peer_source`` argument of FillManager: ``(owner_url, digest) -> PeerSource``."""

    def make(owner_url: str, digest: Digest) -> BlobSource:
        return PeerSource(owner_url, digest, session, token=token, timeout=timeout)

    return make


class PeerToken:
    """The token the nodes of a region present to each other's peer endpoint.

    Without a region (``region`` is ``None``) there is none: :meth:`current` stays ``None``
    and the peer endpoint refuses everyone. With one, :meth:`agree` (at start-up) takes the
    configured token, else the one stored in Redis under :data:`PEER_TOKEN_KEY` (the first
    node's random token wins: ``SET NX``). Redis unreachable then: no token (peer streaming
    off; fills stay node-local) and a warning; never raises.
    """

    def __init__(self, region: RegionLock | None, configured: str | None = None) -> None:
        self.region = region
        self.configured = configured
        self._value: str | None = None

    def current(self) -> str | None:
        """The token agreed at start-up, or ``None``."""
        return self._value

    async def agree(self) -> None:
        if self.region is None:
            return
        if self.configured:
            self._value = self.configured
            return
        try:
            await self.region.redis.set(PEER_TOKEN_KEY, secrets.token_hex(32), nx=True)
            value = await self.region.redis.get(PEER_TOKEN_KEY)
        except Exception as exc:
            log.warning(
                "region peer token unavailable; peer streaming disabled",
                extra={"error": type(exc).__name__},
            )
            return
        self._value = value.decode() if isinstance(value, bytes) else value


class PeerSources:
    """FillManager's ``peer_source``: ``(owner_url, digest) -> PeerSource`` on the upstream
    session of ``upstreams`` with the region's current token. Raises Unavailable while the
    edge is not serving (no session)."""

    def __init__(
        self,
        upstreams: Upstreams,
        token: PeerToken,
        *,
        timeout: aiohttp.ClientTimeout | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.token = token
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def _peer_session(self) -> aiohttp.ClientSession:
        """The upstream session, or with ``ssl_context`` (mTLS, a private CA) a session of
        its own, so peer certificates and CAs never apply to upstream connections."""
        if self.ssl_context is None:
            return self.upstreams.session
        self.upstreams.session  # noqa: B018 -- raises Unavailable while the edge is not serving
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl_context, limit_per_host=16),
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def __call__(self, owner_url: str, digest: Digest) -> BlobSource:
        return PeerSource(
            owner_url,
            digest,
            self._peer_session(),
            token=self.token.current(),
            timeout=self.timeout,
        )

    async def close(self) -> None:
        """Close the peer session of its own, if one was opened. Idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
