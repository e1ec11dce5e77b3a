"""Blobs through the edge: GET/HEAD ``/v2/<name>/blobs/<digest>``.

- **Hit**: zero-copy sendfile from the cache (:mod:`regcore.zerocopy`, uvloop included),
  ``Range`` -> 206 with ``Content-Range``, unsatisfiable -> 416 with
  ``Content-Range: bytes */size``. Served
  whatever the upstream's state (a blob by digest is immutable), except that the caller's
  access (:class:`edge.auth.EdgeAccess`: tokens, private upstreams, edge users) comes first.
- **Miss, GET**: join or start the fill of the digest (:class:`edge.fill.FillManager`: one
  upstream fetch per digest per node and per region) and stream its bytes as they land,
  ``Range`` included, zero-copy too: each span the fill has written goes out with
  ``os.sendfile`` from the growing temp file (:meth:`edge.fill.Fill.spans`). The upstream
  must have announced the size within its connect + read timeout (else 504); upstream
  refusals before the first byte pass on as the spec's errors (404 BLOB_UNKNOWN, 401
  UNAUTHORIZED, 403 DENIED, 429 TOOMANYREQUESTS, 502/504 UNAVAILABLE).
  Headers go out with the first byte, so a fill failing before that is a proper OCI error;
  if the fill fails after the headers went out the connection is cut, so the client sees a
  short body -- never a clean 200 of bad bytes (the fill withholds a full blob's last chunk
  until the digest is verified). An answer of at most 64 KiB that ends at the blob's last
  byte waits for the verified blob before its headers, so a small blob with wrong bytes is
  always a clean 502, however the upstream's bytes were split into reads.
- **Miss, too large to cache**: a blob larger than the whole cache, or one for which running
  fills did not free room within the fill manager's ``space_wait``
  (:class:`edge.fill.TooLargeToCache`, decided from the upstream's announced size before any
  byte is promised), is streamed from the upstream to the client without caching, through the
  same client a fill would use (:mod:`edge.passthrough`: same headers, Range, hashed while
  streaming, cut on a wrong digest or a short stream). The size must be announced within the
  upstream's connect + read timeout as for a fill; the wait for cache space is bounded by
  ``space_wait`` on top.
- **Miss, HEAD**: answered from a fill in progress, else from an upstream ``HEAD`` -- never a
  download. 200 with ``Content-Length``; 404 BLOB_UNKNOWN when the upstream says so.

Every 200/206 carries ``Content-Type: application/octet-stream``, ``Docker-Content-Digest``,
``ETag`` (the digest), ``Content-Length`` and ``Accept-Ranges: bytes``.

Handler: :class:`BlobHandler`, built by :class:`edge.node.EdgeNode` with the router, the
access checker, the cache, the fill manager and the metrics.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from edge import passthrough
from edge.fill import Fill, TooLargeToCache
from edge.routing import Route, Router, ns_of
from edge.sources import UpstreamSource
from edge.timeouts import bounded, deadline
from regcore import errors, zerocopy
from regcore.digest import Digest
from regcore.http import parse_range

if TYPE_CHECKING:
    from edge.auth import EdgeAccess
    from edge.cache import BlobCache
    from edge.fill import FillManager
    from edge.metrics import EdgeMetrics
    from edge.upstreamclient import UpstreamClient

log = logging.getLogger("quayside.edge.blobs")
SPACE_WAIT_GRACE = 1.0
VERIFY_BEFORE_HEADERS = 64 * 1024


def blob_headers(digest: Digest, route: Route) -> dict[str, str]:
    return {
        "Content-Type": "application/octet-stream",
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        **route.headers,
    }


class BlobHandler:
    """GET/HEAD ``/v2/<name>/blobs/<digest>`` (see the module docstring). One per application."""

    def __init__(
        self,
        *,
        router: Router,
        access: EdgeAccess,
        cache: BlobCache,
        fills: FillManager,
        metrics: EdgeMetrics,
    ) -> None:
        self.router = router
        self.access = access
        self.cache = cache
        self.fills = fills
        self.metrics = metrics

    async def get(self, request: web.Request) -> web.StreamResponse:
        """GET/HEAD ``/v2/<name>/blobs/<digest>`` (see the module docstring)."""
        route = self.router.route(request.match_info["name"], ns_of(request.query))
        digest = Digest.parse(request.match_info["digest"])
        client = await self.access.client_for(request, route, "blob", str(digest))
        metrics = self.metrics
        headers = blob_headers(digest, route)
        head = request.method == "HEAD"
        cached = self.cache.lookup(digest)
        if cached is not None:
            if head:
                metrics.cache_hits.labels("blob").inc()
                return _head(headers, cached.size)
            span = parse_range(request.headers.get("Range"), cached.size)
            try:
                response = await zerocopy.file_response(
                    request, cached.path, headers=headers, etag=headers["ETag"]
                )
            except FileNotFoundError:
                pass  # evicted since the lookup: a miss after all
            else:
                metrics.cache_hits.labels("blob").inc()
                length = cached.size if span is None else span[1] - span[0] + 1
                metrics.bytes_served.labels("cache").inc(length)
                return response
        metrics.cache_misses.labels("blob").inc()
        if head:
            return _head(headers, await self._size_without_download(route, client, digest))
        try:
            fill = await self.fills.get(digest, lambda: UpstreamSource(client, route.name, digest))
            await bounded(fill.announced(), deadline(route.upstream))
            size = await _reserved_size(fill, self.fills.space_wait)
        except TooLargeToCache as exc:
            return await passthrough.serve(
                request,
                client,
                route.name,
                digest,
                total=exc.total,
                reason=exc.reason,
                headers=headers,
                metrics=metrics,
                open_timeout=deadline(route.upstream),
            )
        return await self._stream(request, fill, size, headers)

    async def _size_without_download(
        self, route: Route, client: UpstreamClient, digest: Digest
    ) -> int:
        """A fill in progress knows the size; else the upstream's HEAD. Raises BlobUnknown etc."""
        active = self.fills.active(digest)
        if active is not None and active.total is not None:
            return active.total
        return await bounded(client.head_blob(route.name, str(digest)), deadline(route.upstream))

    async def _stream(
        self, request: web.Request, fill: Fill, size: int, headers: dict[str, str]
    ) -> web.StreamResponse:
        span = parse_range(request.headers.get("Range"), size)
        if span is None:
            start, end, status = 0, size - 1, 200
        else:
            (start, end), status = span, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1 if size else 0
        spans = fill.spans(start, end)
        try:  # headers go out with the first byte: a fill failing before that is a clean error
            if not length or (end == size - 1 and length <= VERIFY_BEFORE_HEADERS):
                await fill.result()  # a small answer ending at the blob's end: digest check first
            span = await anext(spans) if length else None
        except BaseException:
            await spans.aclose()
            raise
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        sent = 0
        try:
            await zerocopy.prepare_unbuffered(request, resp)
            while span is not None:  # each span zero-copy from the growing file, as it lands
                fd, offset, count = span
                await zerocopy.send_span(request, resp, fd, offset, count, fill.locate)
                sent += count
                span = await anext(spans, None)
        except (errors.RegistryError, EOFError) as exc:  # the fill broke after headers went out
            log.warning(
                "fill failed mid-response; cutting the connection",
                extra={
                    "digest": str(fill.digest),
                    "sent": sent,
                    "length": length,
                    "error": str(exc),
                },
            )
            if request.transport is not None:
                request.transport.abort()
            return resp
        finally:
            await spans.aclose()
            source = "fill" if fill.source != "cache" else "cache"
            self.metrics.bytes_served.labels(source).inc(sent)
        await resp.write_eof()
        return resp


async def _reserved_size(fill: Fill, space_wait: float) -> int:
    """The fill's size once its cache space is held; the fill itself gives up (raising
    TooLargeToCache) after ``space_wait``, so this bound is only a safety net."""
    try:
        async with asyncio.timeout(space_wait + SPACE_WAIT_GRACE):
            return await fill.size()
    except TimeoutError:
        raise errors.Unavailable(message="cache busy, try again later") from None


def _head(headers: dict[str, str], size: int) -> web.Response:
    return web.Response(status=200, headers={**headers, "Content-Length": str(size)})
