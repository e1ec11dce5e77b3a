"""Refusing a request whose body has not been (fully) read: :func:`refuse_unread_body` (an
error) and :func:`end_unread_body` (any answer not sent yet).

An upload refused early (a quota, a size limit, a bad ``Content-Range``) leaves part of its
body unread on the connection. Left there, the unread bytes would be parsed as the next
request of a keep-alive connection; aiohttp guards against that by reading and discarding the
rest for up to ten seconds (its *lingering* time) before it closes, which for a multi-GiB
layer means receiving gigabytes for nothing.

What :func:`refuse_unread_body` does instead, in this order (also used for a request whose
deferred ``100 Continue`` was never sent, :mod:`regcore.expectcontinue`: the client may or may
not send its body then):

1. answers the spec's JSON error envelope (or the answer given to :func:`end_unread_body`)
   with ``Connection: close`` (so the client knows the connection ends with this answer and
   opens a new one for its next request);
2. reads and discards what keeps arriving for at most ``linger`` seconds or ``drain_bytes``
   bytes, so a client still sending has time to read the answer before the connection goes
   (closing a socket with unread data makes the kernel send a reset, and a reset can destroy
   an answer the client has not read yet: RFC 9112 section 9.6);
3. closes the connection if the body still has not ended. Nothing of it is ever interpreted
   as a request.

Guarantees: the connection never serves another request after the answer; the answer is
fully written before anything is discarded or closed.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from regcore import errors

LINGER = 2.0  # seconds a refused client gets to read the answer while still sending
DRAIN_BYTES = 64 << 20  # at most this many unread bytes are discarded before closing

__all__ = ["DRAIN_BYTES", "LINGER", "body_unread", "end_unread_body", "refuse_unread_body"]


def body_unread(request: web.BaseRequest) -> bool:
    """True if ``request`` has a body that has not been read to its end."""
    return request.body_exists and not request.content.at_eof()


async def refuse_unread_body(
    request: web.BaseRequest,
    err: errors.RegistryError,
    *,
    linger: float = LINGER,
    drain_bytes: int = DRAIN_BYTES,
) -> web.StreamResponse:
    """Answer ``err`` (status, envelope, headers), then end the connection as the module
    docstring says. Returns the answer, already sent (a client gone meanwhile is ignored)."""
    return await end_unread_body(
        request, errors.error_response(err), linger=linger, drain_bytes=drain_bytes
    )


async def end_unread_body(
    request: web.BaseRequest,
    resp: web.StreamResponse,
    *,
    linger: float = LINGER,
    drain_bytes: int = DRAIN_BYTES,
) -> web.StreamResponse:
    """Send ``resp`` (not prepared yet) as the connection's last answer, then end the
    connection as the module docstring says. Returns ``resp``, already sent."""
    resp.force_close()
    try:
        await resp.prepare(request)
        await resp.write_eof()
    except ConnectionError:
        return resp
    await _drain(request, linger, drain_bytes)
    if not request.content.at_eof():
        request.protocol.force_close()  # the answer is in the transport's buffer: flushed
    return resp


async def _drain(request: web.BaseRequest, linger: float, drain_bytes: int) -> None:
    left = drain_bytes
    try:
        async with asyncio.timeout(linger):
            while left > 0 and not request.content.at_eof():
                left -= len(await request.content.readany())
    except (TimeoutError, ConnectionError, OSError):
        pass
    except Exception:  # a malformed rest of the body (bad chunked framing): close anyway
        pass
