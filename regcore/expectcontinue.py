"""``Expect: 100-continue`` answered after our checks, not before them.

aiohttp's default ``expect_handler`` writes ``100 Continue`` as soon as a request's headers
arrive, before any middleware or handler runs: a client that authentication, its roles, a
quota or a size limit is about to refuse is told to send its whole body first. RFC 9110
section 10.1.1 asks the opposite: a server that already knows it will refuse answers the final
status instead, and sends 100 only when it is going to read the body.

The pieces, for routes that read a request body:

- :func:`defer_continue` is their ``expect_handler`` (``resource.add_route(method, handler,
  expect_handler=defer_continue)``): it answers nothing yet and only notes that a 100 is owed
  (any other expectation: 417, and nothing for HTTP/1.0, exactly as aiohttp's default);
- :func:`send_continue` sends the owed 100, once, when the handler is about to read the body
  -- after every check that could refuse the request;
- :func:`continue_middleware` (or :func:`answer_before_continue` in a handler) makes any answer
  given while the 100 is still owed and the body unread the last on its connection: the
  client, told neither to send nor not to send, may or may not send the body, so the
  connection cannot carry another request. The answer goes out with ``Connection: close``
  and the connection ends as :func:`regcore.unreadbody.end_unread_body` says (what still
  arrives is discarded for at most :data:`~regcore.unreadbody.LINGER` seconds; a client that
  closes on the answer ends it at once).

Guarantees: a request on a deferring route never gets ``100 Continue`` before its refusal
(from a middleware or from the handler, whatever the status), and gets it exactly once before
the first byte of its body is read; routes that keep aiohttp's default are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from regcore.http import Handler
from regcore.unreadbody import body_unread, end_unread_body

__all__ = [
    "answer_before_continue",
    "continue_middleware",
    "continue_owed",
    "defer_continue",
    "send_continue",
]

_CONTINUE_LINE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass
class _Owed:
    """One request's deferred 100 (shared by the clones of the request: state is copied
    shallowly)."""

    sent: bool = False


_OWED: web.RequestKey[_Owed] = web.RequestKey("quayside_continue_owed", _Owed)


async def defer_continue(request: web.Request) -> None:
    """``expect_handler`` that sends no 100 yet (see the module docstring). Raises
    ``HTTPExpectationFailed`` (417) for an expectation other than ``100-continue``."""
    if request.version != HttpVersion11:
        return  # HTTP/1.0 knows no 100 (aiohttp's default ignores the header too)
    expect = request.headers.get(hdrs.EXPECT, "")
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
    request[_OWED] = _Owed()


def continue_owed(request: web.BaseRequest) -> bool:
    """True while a deferred 100 has not been sent and the body is not fully received."""
    owed = request.get(_OWED)
    return owed is not None and not owed.sent and body_unread(request)


async def send_continue(request: web.BaseRequest) -> None:
    """Send the deferred ``100 Continue`` if it is owed and not sent yet; else nothing.
    Call it right before reading the body, after every check that may refuse."""
    owed = request.get(_OWED)
    if owed is None or owed.sent:
        return
    owed.sent = True
    writer = request.writer
    await writer.write(_CONTINUE_LINE)
    writer.output_size = 0  # as aiohttp's default: the answer's own bytes start after it
    await writer.drain()


async def answer_before_continue(
    request: web.BaseRequest, resp: web.StreamResponse
) -> web.StreamResponse:
    """``resp`` as it should go out: unchanged unless a deferred 100 is still owed for an
    unread body and ``resp`` is not sent yet; then it is sent as the connection's last answer
    (:func:`regcore.unreadbody.end_unread_body`) and returned, already sent."""
    if resp.prepared or not continue_owed(request):
        return resp
    return await end_unread_body(request, resp)


@web.middleware
async def continue_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Put it outside the middleware that renders errors, so it sees every answer: one given
    while a deferred 100 is still owed ends the connection (:func:`answer_before_continue`).
    Requests without ``Expect`` cost one header lookup."""
    resp = await handler(request)
    if hdrs.EXPECT in request.headers:
        return await answer_before_continue(request, resp)
    return resp
