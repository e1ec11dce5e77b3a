"""Pass-through: a blob the cache cannot hold, streamed from the upstream straight to a client.

:mod:`edge.blobs` falls back to :func:`serve` when the fill of a digest raises
:class:`edge.fill.TooLargeToCache`: the blob is larger than the whole cache (``too_large``),
or running fills held the room longer than the fill manager's ``space_wait`` (``no_space``).
The upstream request goes through the very client a normal miss uses (for a private
upstream: the one :meth:`edge.upstreams.AccessChecker.client_for` handed out after the
caller's access check), so credentials, token flow, redirects without credentials and Range resume
(:class:`regcore.client.BlobStream`, up to the client's ``max_resumes``) are the same.

Guarantees:

- The answer looks like any other blob answer: 200, or 206 with ``Content-Range`` for a
  ``Range`` request (parsed against the size the fill learnt from the upstream; 416 when
  unsatisfiable), with ``Content-Length``, ``Content-Type``, ``Docker-Content-Digest``,
  ``ETag`` and ``Accept-Ranges`` as the caller passes them.
- Nothing reaches the client before the upstream accepted the request: refusals (404, 401,
  403, 429) and timeouts are the same OCI errors as on a fill. Headers go out with the first
  byte sent.
- A response covering the whole blob is hashed while it streams and its last chunk is held
  back until the digest and the length check out. A response covering part of the blob is
  checked for length only (the digest covers the whole blob), as a fill's range that ends
  before the last byte is. When the upstream breaks beyond its resumes, sends too few or too
  many bytes, or the digest does not match, the connection is cut: the client sees a failed
  transfer, never a clean end. If that happens before any byte went out, the client gets
  502 UNAVAILABLE instead.
- Nothing is written to disk and no cache space is used.

Limitation: concurrent pass-through requests for one digest each go upstream (a blob larger
than the whole cache cannot be shared through the cache; a Redis region does not change
that). Counted in ``passthrough{reason}``, ``passthrough_bytes``, ``passthrough_failed`` and
``bytes_served{source="passthrough"}``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from edge.metrics import EdgeMetrics
from edge.timeouts import bounded
from regcore import errors
from regcore.digest import Digest
from regcore.http import parse_range

if TYPE_CHECKING:
    from edge.upstreamclient import UpstreamClient
    from regcore.client import BlobStream

log = logging.getLogger("quayside.edge.passthrough")

_UPSTREAM_ERRORS = (errors.RegistryError, aiohttp.ClientError, OSError, TimeoutError)


class _ClientGone(Exception):
    """The client closed its connection while we were writing to it."""


class _Relay:
    """The client side of one pass-through: prepares the response lazily, counts bytes."""

    def __init__(
        self, request: web.Request, status: int, headers: dict[str, str], length: int
    ) -> None:
        self.request = request
        self.status = status
        self.headers = headers
        self.length = length
        self.resp: web.StreamResponse | None = None
        self.sent = 0

    async def send(self, data: bytes) -> None:
        """Write ``data``, sending the headers first if not done yet. Raises _ClientGone."""
        try:
            if self.resp is None:
                resp = web.StreamResponse(status=self.status, headers=self.headers)
                resp.content_length = self.length
                self.resp = resp
                await resp.prepare(self.request)
            if data:
                await self.resp.write(data)
                self.sent += len(data)
        except ConnectionResetError as exc:
            raise _ClientGone from exc

    async def finish(self) -> web.StreamResponse:
        await self.send(b"")
        assert self.resp is not None
        try:
            await self.resp.write_eof()
        except ConnectionResetError as exc:
            raise _ClientGone from exc
        return self.resp

    def abort(self) -> None:
        """Cut the connection: the client sees a short body or a reset, never a clean end."""
        if self.request.transport is not None:
            self.request.transport.abort()


async def serve(
    request: web.Request,
    client: UpstreamClient,
    repo: str,
    digest: Digest,
    *,
    total: int,
    reason: str,
    headers: dict[str, str],
    metrics: EdgeMetrics,
    open_timeout: float,
) -> web.StreamResponse:
    """Answer a blob GET from the upstream without caching (see the module docstring).

    ``client`` is the registry client a fill of ``repo``/``digest`` would use; ``total`` the
    blob's size as the upstream announced it; ``open_timeout`` bounds the upstream's answer
    to the request. Raises RangeInvalid (416), the upstream's OCI errors, UpstreamTimeout or
    UpstreamUnavailable -- all before any byte was sent.
    """
    span = parse_range(request.headers.get("Range"), total)
    if span is None:
        start, end, status = 0, total - 1, 200
    else:
        (start, end), status = span, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{total}"
    length = end - start + 1
    whole = start == 0 and end == total - 1
    stream = client.blob_stream(repo, str(digest), offset=start, end=None if whole else end + 1)
    relay = _Relay(request, status, headers, length)
    streaming = False
    try:
        await _open(stream, total, open_timeout)
        metrics.passthrough.labels(reason).inc()
        streaming = True
        await _pump(stream, relay, digest if whole else None)
        return await relay.finish()
    except _ClientGone:
        log.info("client left a pass-through", extra={"digest": str(digest), "sent": relay.sent})
        assert relay.resp is not None  # only writes raise _ClientGone, after it was made
        return relay.resp
    except _UPSTREAM_ERRORS as exc:
        if streaming:
            metrics.passthrough_failed.inc()
        if relay.resp is None:  # nothing sent yet: a proper OCI error
            if isinstance(exc, errors.RegistryError):
                raise
            raise errors.UpstreamUnavailable({"digest": str(digest)}) from exc
        log.warning(
            "pass-through failed mid-response; cutting the connection",
            extra={"digest": str(digest), "sent": relay.sent, "length": length, "error": str(exc)},
        )
        relay.abort()
        return relay.resp
    finally:
        await stream.aclose()
        metrics.passthrough_bytes.inc(relay.sent)
        metrics.bytes_served.labels("passthrough").inc(relay.sent)


async def _open(stream: BlobStream, total: int, timeout: float) -> None:
    """Send the upstream request; its size must still be ``total``. Raises OCI errors."""
    await bounded(stream.open(), timeout)
    if stream.total_size != total:
        raise errors.UpstreamUnavailable(
            {"announced": total, "now": stream.total_size},
            message="upstream changed the blob's size",
        )


async def _pump(stream: BlobStream, relay: _Relay, digest: Digest | None) -> None:
    """Relay every chunk but the last; that one only once length (and digest) are right.

    Raises UpstreamUnavailable on a wrong length or digest, the stream's errors as they come.
    """
    hasher = digest.hasher() if digest is not None else None
    received = 0
    held = b""
    async for chunk in stream:
        received += len(chunk)
        if received > relay.length:
            raise errors.UpstreamUnavailable(message="upstream sent more bytes than announced")
        if hasher is not None:
            hasher.update(chunk)
        if held:
            await relay.send(held)
        held = chunk
    if received != relay.length:
        raise errors.UpstreamUnavailable(
            {"received": received, "expected": relay.length},
            message="upstream stream ended short",
        )
    if hasher is not None and digest is not None and str(hasher.digest()) != str(digest):
        raise errors.UpstreamUnavailable(
            {"digest": str(digest)}, message="upstream sent bytes that do not match the digest"
        )
    await relay.send(held)
