"""Blob handlers: ``GET``/``HEAD``/``DELETE /v2/<name>/blobs/<digest>``.

Guarantees:
- A blob is served only when it is linked into ``<name>`` (``_layers`` link) *and* its
  complete, verified file exists in the store; anything else is 404 ``BLOB_UNKNOWN``. Upload
  data never lives in the blob tree, so nothing half-written can be served.
- GET goes out by zero-copy sendfile (:mod:`regcore.zerocopy`, uvloop included) with ``Range`` support (206 +
  ``Content-Range``); a malformed or unsatisfiable ``Range`` is 416 ``RANGE_INVALID`` with
  ``Content-Range: bytes */<size>``. ``ETag`` is the quoted digest (``If-None-Match`` on it
  answers 304); ``Cache-Control`` marks the bytes immutable.
- DELETE removes the repository's link only (the bytes stay until garbage collection, as in
  registry:2): 202, or 404 ``BLOB_UNKNOWN`` when not linked, or 405 ``UNSUPPORTED`` when
  ``storage.delete.enabled`` is false.

Helpers used by the other handler modules: :func:`request_name`, :func:`request_digest`,
:func:`location`.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from origin import state
from regcore import errors, zerocopy
from regcore.digest import Digest
from regcore.http import DIGEST, NAME, etag_matches, parse_range
from regcore.reference import validate_name
from regcore.storage.interfaces import BlobFile

IMMUTABLE = "max-age=31536000, immutable"


def request_name(request: web.Request) -> str:
    """The validated repository name of the request. Raises NameInvalid."""
    return validate_name(request.match_info.get("name", ""))


def request_digest(request: web.Request, key: str = "digest") -> Digest:
    """The validated digest in the path. Raises DigestInvalid."""
    return Digest.parse(request.match_info.get(key, ""))


def location(request: web.Request, path: str) -> str:
    """``path`` as a Location. ``http.relativeurls: true``: the path; ``false``: absolute,
    under ``http.host`` or else the request's own scheme and Host (``X-Forwarded-*`` are not
    read: behind a proxy, set ``http.host``); not set: under ``http.host`` when configured,
    else the path."""
    http = getattr(request.app[state.CONFIG], "http", None)
    relative = getattr(http, "relativeurls", None)
    host = getattr(http, "host", None)
    if relative:
        return path
    if host:
        return host.rstrip("/") + path
    if relative is False:
        return f"{request.scheme}://{request.host}{path}"
    return path


def blob_path(name: str, digest: Digest) -> str:
    return f"/v2/{name}/blobs/{digest}"


async def _linked_blob(request: web.Request, name: str, digest: Digest) -> BlobFile:
    """The blob linked into ``name``, as the store's file to send. Raises BlobUnknown."""
    repos = request.app[state.REPOS]
    # A HEAD is how pushers check a blob before skipping its upload: no gc sweep in between.
    async with request.app[state.OPS].blob_check(digest, request.method == "HEAD"):
        if not await repos.blob_linked(name, digest):
            raise errors.BlobUnknown(str(digest))
        blob = await request.app[state.STORE].locate(digest)
    if blob is None:
        raise errors.BlobUnknown(str(digest))
    return blob


async def get_blob(request: web.Request) -> web.StreamResponse:
    """GET/HEAD: the blob's bytes (or headers only), Range aware."""
    name = request_name(request)
    digest = request_digest(request)
    blob = await _linked_blob(request, name, digest)
    size = blob.size
    common = {
        "Docker-Content-Digest": str(digest),
        hdrs.ETAG: f'"{digest}"',
        hdrs.CACHE_CONTROL: IMMUTABLE,
        hdrs.ACCEPT_RANGES: "bytes",
    }
    if etag_matches(request.headers.get(hdrs.IF_NONE_MATCH), digest):
        return web.Response(status=304, headers=common)
    if request.method == "GET":
        # Validate Range ourselves so a bad one gets the JSON envelope (FileResponse would
        # answer a bare 416); valid ranges are then served by FileResponse.
        parse_range(request.headers.get(hdrs.RANGE), size)
    headers = {**common, hdrs.CONTENT_TYPE: "application/octet-stream"}
    try:
        response = await zerocopy.file_response(request, blob.path, headers=headers)
    except FileNotFoundError:
        raise errors.BlobUnknown(str(digest)) from None
    metrics = request.app.get(state.METRICS)
    if metrics is not None and request.method == "GET":
        metrics.blob_bytes_served.inc(response.content_length or 0)
    return response


async def delete_blob(request: web.Request) -> web.Response:
    """DELETE: unlink the blob from the repository (202)."""
    name = request_name(request)
    digest = request_digest(request)
    if not request.app[state.DELETE_ENABLED]:
        raise errors.Unsupported("blob deletion is disabled", message="deletion is disabled")
    if not await request.app[state.REPOS].unlink_blob(name, digest):
        raise errors.BlobUnknown(str(digest))
    request.app[state.OPS].deleted(name)
    metrics = request.app.get(state.METRICS)
    if metrics is not None:
        metrics.blobs_deleted.inc()
    return web.Response(status=202, headers={"Docker-Content-Digest": str(digest)})


def add_routes(app: web.Application) -> None:
    """Register the blob routes and the ETag fix-up signal."""
    resource = app.router.add_resource(f"/v2/{NAME}/blobs/{DIGEST}", name="blob")
    resource.add_route("GET", get_blob)
    resource.add_route("HEAD", get_blob)
    resource.add_route("DELETE", delete_blob)
