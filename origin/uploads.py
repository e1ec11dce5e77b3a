"""Blob upload handlers: ``POST``/``PATCH``/``PUT``/``GET``/``DELETE /v2/<name>/blobs/uploads/...``.

The handlers parse the request (``Content-Range``, ``?digest=``, ``?mount=&from=``), stream the
body to the :class:`~origin.uploadsessions.Uploads` manager of the app and answer with
``Location`` (absolute, see :func:`origin.blobs.location`), ``Range`` and
``Docker-Upload-UUID`` (:mod:`origin.uploadstatus`). Sessions, their on-disk form and their
guarantees are described in :mod:`origin.uploadsessions`; :class:`Uploads` (from there),
:func:`valid_upload_id` and :func:`range_value` (from :mod:`origin.uploadstatus`) are
re-exported here.

Guarantees (beyond the manager's):
- A ``Content-Range`` (on a PATCH or on the closing PUT) that does not parse, does not
  continue the upload or disagrees with ``Content-Length`` answers 416 ``RANGE_INVALID`` with
  the session's current ``Range`` and ``Location``, before any byte is read.
- A request refused while its body is not fully read (quota, size limit, bad range) gets the
  error envelope with ``Connection: close``; the rest of its body is discarded for a moment,
  then the connection is closed (:func:`regcore.unreadbody.refuse_unread_body`), so no unread
  byte is ever taken for the next request of a keep-alive connection.
- ``Expect: 100-continue`` (POST, PATCH, PUT): the ``100 Continue`` is sent when the body is
  about to be read, after access control and every check above (session, range, size limit,
  an announced size over the quota); a request refused before gets the final status instead,
  as its connection's last answer (:mod:`regcore.expectcontinue`).
- ``POST ?mount=&from=`` that cannot be honoured (bad digest or name, blob not in ``from``)
  falls back to a new session (202), as distribution does.

Errors: ``BLOB_UPLOAD_UNKNOWN`` (404), ``RANGE_INVALID`` (416, with the current ``Range``),
``DIGEST_INVALID`` (400), ``SIZE_INVALID`` (413 over ``quayside.limits.max_blob_bytes``),
``NAME_INVALID`` (400), ``DENIED`` (403: the namespace's quota; while the body arrives the
session is cancelled and its bytes dropped, see :mod:`origin.quota`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import hdrs, web

from origin import state
from origin.blobs import blob_path, location, request_name
from origin.uploadsessions import Uploads
from origin.uploadstatus import range_error, range_value, session_headers, valid_upload_id
from regcore import errors
from regcore.digest import Digest
from regcore.expectcontinue import defer_continue, send_continue
from regcore.http import NAME, UPLOAD_ID
from regcore.reference import validate_name
from regcore.unreadbody import body_unread, refuse_unread_body

__all__ = [
    "Uploads",
    "add_routes",
    "cancel_upload",
    "parse_content_range",
    "patch_upload",
    "put_upload",
    "range_value",
    "start_upload",
    "upload_status",
    "valid_upload_id",
]

_CONTENT_RANGE_RE = re.compile(r"\s*(?:bytes[ =])?\s*(\d+)\s*-\s*(\d+)\s*(?:/\s*(?:\d+|\*))?\s*")


def parse_content_range(header: str) -> tuple[int, int]:
    """``<start>-<end>`` (optionally ``bytes ``/``bytes=`` and ``/<total>``), inclusive.

    Raises RangeInvalid for anything else or ``start > end``."""
    m = _CONTENT_RANGE_RE.fullmatch(header)
    if not m:
        raise errors.RangeInvalid(header[:64])
    start, end = int(m.group(1)), int(m.group(2))
    if start > end:
        raise errors.RangeInvalid(header[:64])
    return start, end


# -- handlers ------------------------------------------------------------------------------
def _closing_unread_body(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A body-reading handler whose refusals close the connection when the body was not
    read to its end (see the module docstring)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.RegistryError as err:
            if not body_unread(request):
                raise
            return await refuse_unread_body(request, err)

    return wrapped


def _uploads(request: web.Request) -> Uploads:
    return request.app[state.UPLOADS]


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    """The body, read when first iterated: the deferred ``100 Continue`` goes out then, after
    the checks the upload manager makes before reading (session, range, size, quota)."""
    if request.body_exists:
        await send_continue(request)
        async for chunk in request.content.iter_any():
            yield chunk


def _upload_response(
    request: web.Request, status: int, name: str, upload_id: str, offset: int
) -> web.Response:
    headers = session_headers(name, upload_id, offset)
    headers[hdrs.LOCATION] = location(request, headers[hdrs.LOCATION])
    return web.Response(status=status, headers=headers)


def _blob_created(request: web.Request, name: str, digest: Digest) -> web.Response:
    return web.Response(
        status=201,
        headers={
            hdrs.LOCATION: location(request, blob_path(name, digest)),
            "Docker-Content-Digest": str(digest),
        },
    )


@_closing_unread_body
async def start_upload(request: web.Request) -> web.Response:
    """POST: new session (202), monolithic ``?digest=`` (201) or ``?mount=&from=`` (201/202)."""
    name = request_name(request)
    uploads = _uploads(request)
    query = request.query
    mount, source = query.get("mount"), query.get("from")
    if mount is not None and source is not None and "digest" not in query:
        try:
            dg = Digest.parse(mount)
            src = validate_name(source)
        except errors.RegistryError:
            pass  # as distribution: an unusable mount request falls back to a new session
        else:
            if await uploads.mount(name, src, dg):
                return _blob_created(request, name, dg)
    if "digest" in query:
        dg = Digest.parse(query["digest"])
        await uploads.put_monolithic(name, dg, _body(request), request.content_length)
        return _blob_created(request, name, dg)
    upload_id = await uploads.start(name)
    return _upload_response(request, 202, name, upload_id, 0)


async def upload_status(request: web.Request) -> web.Response:
    """GET: 204 with ``Range`` and ``Location``."""
    name = request_name(request)
    upload_id = request.match_info["upload_id"]
    offset = await _uploads(request).offset(name, upload_id)
    return _upload_response(request, 204, name, upload_id, offset)


@_closing_unread_body
async def patch_upload(request: web.Request) -> web.Response:
    """PATCH: append a chunk (``Content-Range`` checked when present); 202."""
    name = request_name(request)
    upload_id = valid_upload_id(request.match_info["upload_id"])
    uploads = _uploads(request)
    start, end = await _chunk_range(request, uploads, name, upload_id)
    try:
        offset = await uploads.append(
            name, upload_id, _body(request), start=start, end=end, length=request.content_length
        )
    except errors.RangeInvalid as err:
        _absolute_location(request, err)
        raise
    return _upload_response(request, 202, name, upload_id, offset)


async def _chunk_range(
    request: web.Request, uploads: Uploads, name: str, upload_id: str
) -> tuple[int | None, int | None]:
    """The chunk's ``Content-Range`` (``(None, None)`` without one); a malformed one raises
    RangeInvalid with the session's current ``Range`` and ``Location``."""
    header = request.headers.get(hdrs.CONTENT_RANGE)
    if header is None:
        return None, None
    try:
        return parse_content_range(header)
    except errors.RangeInvalid as err:
        offset = await uploads.offset(name, upload_id)
        bad = range_error(name, upload_id, offset, str(err.detail))
        _absolute_location(request, bad)
        raise bad from None


def _absolute_location(request: web.Request, err: errors.RegistryError) -> None:
    if hdrs.LOCATION in err.headers:
        err.headers[hdrs.LOCATION] = location(request, err.headers[hdrs.LOCATION])


@_closing_unread_body
async def put_upload(request: web.Request) -> web.Response:
    """PUT ``?digest=``: final chunk (optional; its ``Content-Range`` must continue the
    upload, else 416 with the session unchanged), verify, commit, link; 201."""
    name = request_name(request)
    upload_id = valid_upload_id(request.match_info["upload_id"])
    raw = request.query.get("digest")
    if raw is None:
        raise errors.DigestInvalid("digest query parameter missing", message="digest missing")
    dg = Digest.parse(raw)
    uploads = _uploads(request)
    start, end = await _chunk_range(request, uploads, name, upload_id)
    body = _body(request) if request.body_exists else None
    try:
        await uploads.finish(
            name, upload_id, dg, body, request.content_length, start=start, end=end
        )
    except errors.RangeInvalid as err:
        _absolute_location(request, err)
        raise
    return _blob_created(request, name, dg)


async def cancel_upload(request: web.Request) -> web.Response:
    """DELETE: cancel the session; 204."""
    name = request_name(request)
    await _uploads(request).cancel(name, request.match_info["upload_id"])
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    # The body-carrying methods send their 100 Continue only when they read the body.
    start = app.router.add_resource(f"/v2/{NAME}/blobs/uploads/", name="upload_start")
    start.add_route("POST", start_upload, expect_handler=defer_continue)
    session = app.router.add_resource(f"/v2/{NAME}/blobs/uploads/{UPLOAD_ID}", name="upload")
    session.add_route("GET", upload_status)
    session.add_route("HEAD", upload_status)
    session.add_route("PATCH", patch_upload, expect_handler=defer_continue)
    session.add_route("PUT", put_upload, expect_handler=defer_continue)
    session.add_route("DELETE", cancel_upload)
