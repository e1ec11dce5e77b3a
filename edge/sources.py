"""Where a fill reads a blob from: the upstream registry, a peer edge node, any HTTP URL.

Interface (edge/fill.py consumes it; edge/blobs.py builds upstream sources)::

    class BlobSource(Protocol):
        description: str                      # "upstream", "peer", ... (logs, metrics labels)
        async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]

``open(offset)`` returns the blob's *total* size and an iterator of chunks starting at byte
``offset``. A fill calls ``open(0)`` first and ``open(n)`` to resume after a break; the
iterator is always closed (``aclose``) by the caller, also when abandoned early.

The HTTP sources' iterators (:class:`ResponseChunks`) can also hand their open response over,
before the first chunk, to a caller that reads the body itself:
``chunks.detach(accept) -> aiohttp.ClientResponse | None`` (the fill reads it from the socket
on its own thread, see :mod:`edge.fillsocket`; the caller then closes the response).

Errors a source raises:
- :class:`SourceError` (and subclasses), ``aiohttp.ClientError``, ``OSError``,
  ``TimeoutError``: transient, the fill may reopen at its offset.
- :class:`PeerMiss`: a peer does not have the blob (HTTP 404); the fill decides what next.
- :class:`errors.RegistryError` with a 4xx status (``BlobUnknown``, ``Unauthorized``,
  ``TooManyRequests``...): final, passed on to every waiter as is.

Sources here: :class:`UpstreamSource` (a :class:`regcore.client` registry client's
``blob_stream``), :class:`HttpSource` (plain GET with ``Range``, base of
:class:`edge.peers.PeerSource`), :class:`FuncSource` (any ``open`` coroutine, for wiring and
tests).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import aiohttp

from regcore import errors
from regcore.digest import Digest

if TYPE_CHECKING:
    from edge.upstreamclient import UpstreamClient

Accept = Callable[[aiohttp.ClientResponse], bool]

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


@runtime_checkable
class BlobSource(Protocol):
    """Where a fill reads from. open(offset) returns (total_size, chunks) with chunks starting at offset."""

    description: str

    async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]: ...


class SourceError(Exception):
    """A transient failure of a source (connection cut, bad status, short stream)."""


class ShortStream(SourceError):
    """A source's stream ended before the blob's total size."""


class PeerMiss(SourceError):
    """A peer answered 404: it has neither the blob nor a fill of it."""


def is_transient(exc: BaseException) -> bool:
    """Whether a fill may retry/resume after ``exc``."""
    if isinstance(exc, errors.RegistryError):
        return exc.status >= 500
    return isinstance(exc, SourceError | aiohttp.ClientError | OSError | TimeoutError)


class FuncSource:
    """A source from a coroutine function ``open(offset) -> (total, chunks)``."""

    def __init__(
        self,
        open_fn: Callable[[int], Awaitable[tuple[int, AsyncIterator[bytes]]]],
        description: str = "upstream",
    ) -> None:
        self._open = open_fn
        self.description = description

    async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]:
        return await self._open(offset)


class UpstreamSource:
    """A blob from an upstream registry through an :class:`~edge.upstreamclient.UpstreamClient`.

    ``open(offset)`` enters ``client.blob_stream(repo, digest, offset=offset)`` (a
    :class:`regcore.client.BlobStream`: it resumes broken connections with Range itself, up to
    the client's ``max_resumes``) and reads its ``total_size``; the stream is closed when the
    chunk iterator is closed. Upstream refusals surface as the client's mapped OCI errors
    (BlobUnknown, Unauthorized, TooManyRequests...), an exhausted resume as BlobStreamBroken
    (502, transient: the fill may reopen at its offset once more). When the fill takes the
    response over (``detach``: it reads the socket itself), a cut is the fill's to resume: it
    reopens the source at its offset.
    """

    description = "upstream"

    def __init__(self, client: UpstreamClient, repo: str, digest: Digest) -> None:
        self.client = client
        self.repo = repo
        self.digest = digest

    async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]:
        stream = self.client.blob_stream(self.repo, str(self.digest), offset=offset)
        await stream.__aenter__()
        total = stream.total_size
        if total is None:
            await stream.__aexit__(None, None, None)
            raise SourceError("upstream did not say the blob's size")
        return int(total), ResponseChunks(stream, detach=stream.detach, close=stream.aclose)


class ResponseChunks:
    """Chunks of an open HTTP body; :meth:`detach` hands the response over instead.

    ``chunks`` iterates the body, ``detach(accept)`` gives the response away (or None),
    ``close()`` releases what is still held; :meth:`aclose` is idempotent.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes] | Any,
        *,
        detach: Callable[[Accept], aiohttp.ClientResponse | None],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self._chunks = chunks.__aiter__()
        self._detach = detach
        self._close: Callable[[], Awaitable[None]] | None = close
        self._started = False

    def __aiter__(self) -> ResponseChunks:
        return self

    async def __anext__(self) -> bytes:
        self._started = True
        return await self._chunks.__anext__()

    def detach(self, accept: Accept) -> aiohttp.ClientResponse | None:
        """The open response, if no chunk was taken yet and ``accept(response)``; else None."""
        return None if self._started else self._detach(accept)

    async def aclose(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            await close()


class HttpSource:
    """``GET url`` (with ``Range: bytes=N-`` on reopen) through an aiohttp session.

    200 gives the total from ``Content-Length`` (bytes before ``offset`` are skipped if a server
    ignores Range), 206 from ``Content-Range``; 404 raises :meth:`not_found` (BlobUnknown here),
    other statuses raise :class:`SourceError`.
    """

    description = "http"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> None:
        self.session = session
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout or aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)

    def not_found(self) -> Exception:
        return errors.BlobUnknown(self.url)

    async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]:
        headers = dict(self.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        resp = await self.session.get(self.url, headers=headers, timeout=self.timeout)
        try:
            skip = 0
            if resp.status == 404:
                raise self.not_found()
            if resp.status == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                if m is None or int(m.group(1)) != offset:
                    raise SourceError(f"bad Content-Range {resp.headers.get('Content-Range')!r}")
                total = int(m.group(3))
            elif resp.status == 200:
                if resp.content_length is None:
                    raise SourceError("response without Content-Length")
                total, skip = resp.content_length, offset
            else:
                raise SourceError(f"HTTP {resp.status} from {self.description}")
        except BaseException:
            resp.release()
            raise
        held: list[aiohttp.ClientResponse] = [resp]

        def detach(accept: Accept) -> aiohttp.ClientResponse | None:
            if skip or not held or not accept(held[0]):
                return None
            return held.pop()

        async def close() -> None:
            if held:
                held.pop().release()

        return total, ResponseChunks(_iter_response(resp, skip), detach=detach, close=close)


async def _iter_response(resp: aiohttp.ClientResponse, skip: int) -> AsyncIterator[bytes]:
    try:
        while True:  # each piece as the connection delivered it: no join, no copy
            chunk, end_of_http_chunk = await resp.content.readchunk()
            if not chunk:
                if end_of_http_chunk:
                    continue
                break
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk, skip = chunk[skip:], 0
            yield chunk
    finally:
        resp.release()
