"""Middlewares and helpers shared by the origin and edge aiohttp applications.

:func:`standard_middleware` (what :func:`standard_middlewares` returns; one layer so the
per-request cost is one coroutine frame):

- errors: :class:`~regcore.errors.RegistryError` (and aiohttp's own 404/405/413) become the
  spec's JSON envelope (every entry of a :class:`~regcore.errors.RegistryErrors`); an
  unexpected exception becomes a 500 with no internals in the body (it is logged with its
  traceback instead: tracebacks are for our own bugs). No error body names an internal URL:
  URLs in messages and details become ``<url>``, and a 5xx's free-text detail (an upstream
  failure described from its exception, with hosts and ports) is logged at info instead of
  sent;
- headers: ``Docker-Distribution-API-Version`` on every answer; with
  :func:`on_prepare_api_header` installed, ``Server: quayside`` (no versions) on every answer;
- path guard: encoded slashes, ``..`` and NUL in ``/v2/`` paths are refused before the
  handler runs, so a name can never address anything outside its repository.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from regcore import errors
from regcore.reference import check_raw_path

log = logging.getLogger("quayside.http")

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
SERVER_HEADER = ("Server", "quayside")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Route pieces: names may contain slashes; validation (NAME_INVALID) happens in handlers.
NAME = r"{name:[^?#]+?}"
DIGEST = r"{digest:[^/]+}"
REFERENCE = r"{reference:[^/]+}"
UPLOAD_ID = r"{upload_id:[^/]+}"
_URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


@web.middleware
async def standard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Path guard, API version header and error rendering in one layer (one coroutine frame
    per request instead of three), behaving as these three middlewares in this order would:

    1. errors (outermost): :class:`~regcore.errors.RegistryError` becomes the spec's envelope
       (a HEAD answer keeps status and headers, no body); aiohttp's 404 under ``/v2/``, 405
       and 413 become NAME_UNKNOWN, UNSUPPORTED and SIZE_INVALID envelopes (other
       ``HTTPException`` pass on); a client gone (any ``ConnectionError``) is one info line
       and a deadline passed (``TimeoutError``) one warning line, both without traceback and
       re-raised (aiohttp closes the connection; :class:`regcore.serving.ServerLogger` keeps
       aiohttp from reporting them again); a malformed request body
       (``RequestPayloadError``: bad chunked encoding...) is one info line and a 400
       BLOB_UPLOAD_INVALID; anything else is logged with its traceback and answered 500 with
       no internals;
    2. headers: an answer the handler returns unprepared gets ``Docker-Distribution-API-Version``;
    3. path guard: ``/v2/`` paths that :func:`regcore.reference.check_raw_path` refuses
       (encoded separators, NUL, empty, ``.`` or ``..`` segments) get NAME_INVALID before the
       handler runs.
    """
    try:
        raw = request.raw_path
        if raw.startswith("/v2/"):
            check_raw_path(raw)
        resp = await handler(request)
        if not resp.prepared:
            resp.headers.setdefault(*API_VERSION_HEADER)
        return resp
    except errors.RegistryError as err:
        _keep_internals_out(err)
        if request.method == "HEAD":
            # HEAD answers carry no body, but keep status and headers.
            return web.Response(
                status=err.status, headers={**dict([API_VERSION_HEADER]), **err.headers}
            )
        return errors.error_response(err)
    except web.HTTPException as exc:
        if exc.status == 404 and request.path.startswith("/v2/"):
            return errors.error_response(errors.NameUnknown(message="not found"))
        if exc.status == 405:
            return errors.error_response(errors.MethodNotAllowed(request.method))
        if exc.status == 413:
            return errors.error_response(errors.SizeTooLarge())
        raise
    except ConnectionError as exc:
        # The client went away mid-answer: nothing to send, nothing for us to fix.
        log.info("client went away", extra=_request_fields(request, exc))
        raise
    except TimeoutError as exc:
        log.warning("request timed out", extra=_request_fields(request, exc))
        raise
    except RequestPayloadError as exc:
        log.info("malformed request body", extra=_request_fields(request, exc))
        return errors.error_response(
            errors.BlobUploadInvalid({"reason": first_line(exc)}, message="malformed request body")
        )
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return errors.error_response(errors.Internal())


def _keep_internals_out(err: errors.RegistryError) -> None:
    """Make ``err`` (every error of a :class:`~regcore.errors.RegistryErrors`) fit for a
    client: a URL in its message or detail becomes ``<url>``; a 5xx's free-text detail (an
    upstream failure described from the exception: URLs, hosts, ports) is logged, not sent."""
    for one in err.errors if isinstance(err, errors.RegistryErrors) else (err,):
        if one.status >= 500 and isinstance(one.detail, str):
            log.info(
                "%s answered without its detail",
                one.code,
                extra={"status": one.status, "detail": one.detail},
            )
            one.detail = None
        one.detail = _scrub(one.detail)
        one.msg = _scrub(one.msg)
    if isinstance(err, errors.RegistryErrors):
        err.detail, err.msg = err.errors[0].detail, err.errors[0].msg


def _scrub(value: Any) -> Any:
    """``value`` with every URL in its strings (nested in lists and dicts too) replaced."""
    if isinstance(value, str):
        return _URL_RE.sub("<url>", value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _request_fields(request: web.Request, exc: BaseException) -> dict[str, str]:
    return {"method": request.method, "path": request.path, "error": type(exc).__name__}


def first_line(exc: BaseException) -> str:
    """The first line of an aiohttp parser error's message (``Invalid header token``), without
    the offending bytes it quotes on the following lines (they may hold anything)."""
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    message = getattr(inner, "message", None)
    text = message if isinstance(message, str) else str(inner)
    text = re.sub(r"^\d{3}, message:\s*", "", text.strip())
    return text.split("\n", 1)[0].rstrip(":").strip()[:200] or type(exc).__name__


def standard_middlewares() -> list:
    """The shared middlewares, to put first (outermost) so every other failure is rendered as
    OCI JSON: one layer, see :func:`standard_middleware`."""
    return [standard_middleware]


async def on_prepare_api_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` handler both servers install: streamed answers carry the API
    version header too, and every answer of the application (plain, streamed, file, error,
    aiohttp's own 404/405) names the server as ``Server: quayside`` -- never the Python and
    aiohttp versions aiohttp would put there, which scanners match against advisories."""
    response.headers.setdefault(*API_VERSION_HEADER)
    response.headers[SERVER_HEADER[0]] = SERVER_HEADER[1]


def etag_matches(header: str | None, digest: object) -> bool:
    """Whether an ``If-None-Match`` value names ``digest`` (quoted or bare, weak or strong) or
    is ``*``: content-addressed answers never change, so weak comparison is exact."""
    if not header:
        return False
    wanted = str(digest)
    for part in header.split(","):
        tag = part.strip().removeprefix("W/")
        if tag == "*" or tag.strip('"') == wanted:
            return True
    return False


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=a-b`` Range against ``size``; returns inclusive (start, end).

    None when there is no Range header. Raises :class:`errors.RangeInvalid` (416) for a range
    that is malformed, multi-part or unsatisfiable.
    """
    if header is None:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        raise errors.RangeInvalid(header[:64], headers={"Content-Range": f"bytes */{size}"})
    first, last = m.group(1), m.group(2)
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if start > end or start >= size:
            raise errors.RangeInvalid(header[:64], headers={"Content-Range": f"bytes */{size}"})
    else:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise errors.RangeInvalid(header[:64], headers={"Content-Range": f"bytes */{size}"})
        start, end = max(0, size - suffix), size - 1
    return start, end
