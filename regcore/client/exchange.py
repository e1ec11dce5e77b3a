"""``Exchange``: requests to one registry through its transport, and the status check.

The layer below the registry API: :class:`~regcore.client.registry.RegistryClient` is an
``Exchange`` plus the API, and the upload functions (:mod:`.uploads`) take any ``Exchange``,
so neither of those two modules imports the other. Guarantees are the transport's (auth,
redirects without credentials, retries for GET/HEAD only, bounded timeouts); failures raise
:mod:`regcore.errors` exceptions mapped by :func:`~regcore.client.status.error_for`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from regcore import errors
from regcore.client.auth import scopes_for_path
from regcore.client.status import Kind, error_for, redact
from regcore.client.transport import Transport

_ERROR_BODY_LIMIT = 64 * 1024


class Exchange:
    """HTTP exchanges with one registry through ``transport`` (which the owner closes)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        scopes: Sequence[str] | None = None,
    ) -> aiohttp.ClientResponse:
        """Escape hatch: any request with auth, redirects and (GET/HEAD) retries.

        Returns the response whatever its status; the caller must ``release()`` it or use
        ``async with``. ``scopes`` default to what the path needs (``repository:<n>:pull`` ...).
        """
        url = self.transport.url(path)
        if params:
            url = url.extend_query(params)
        return await self.transport.send(
            method,
            url,
            headers=headers,
            data=data,
            scopes=scopes if scopes is not None else scopes_for_path(method, url.path),
        )

    async def expect(
        self,
        method: str,
        path: str,
        ok: Sequence[int],
        kind: Kind,
        *,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        scopes: Sequence[str] | None = None,
    ) -> aiohttp.ClientResponse:
        """:meth:`request`, then a status in ``ok`` or the mapped error for ``kind`` (the error
        body, at most 64 KiB, is read for the OCI error code; never for HEAD)."""
        resp = await self.request(
            method, path, headers=headers, data=data, params=params, scopes=scopes
        )
        if resp.status in ok:
            return resp
        async with resp:
            body = (
                b""
                if method == "HEAD"
                else await read_limited(resp, _ERROR_BODY_LIMIT, strict=False)
            )
        raise error_for(
            resp.status, kind, method=method, url=resp.url, headers=resp.headers, body=body
        )


async def read_body(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes and exactly ``Content-Length`` when one was sent.

    Raises:
        UpstreamUnavailable: larger than ``limit``, short, or broken.
        UpstreamTimeout: the read timed out.
    """
    body = await read_limited(resp, limit + 1)
    if len(body) > limit:
        raise errors.UpstreamUnavailable(f"{resp.url.path}: response larger than {limit} bytes")
    if resp.content_length is not None and len(body) != resp.content_length:
        raise errors.UpstreamUnavailable(f"{resp.url.path}: short response body")
    return body


async def read_limited(resp: aiohttp.ClientResponse, limit: int, *, strict: bool = True) -> bytes:
    """Read at most ``limit`` bytes of the body (the rest is left unread).

    ``strict``: a broken body raises UpstreamUnavailable and a read timeout UpstreamTimeout;
    otherwise (error bodies) whatever arrived is returned.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        while size < limit:
            chunk = await resp.content.read(min(65536, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except TimeoutError as exc:
        if strict:
            raise errors.UpstreamTimeout(f"reading {redact(resp.url)} timed out") from exc
    except aiohttp.ClientError as exc:
        if strict:
            raise errors.UpstreamUnavailable(
                f"reading {redact(resp.url)} failed: {type(exc).__name__}"
            ) from exc
    return b"".join(chunks)
