"""How an upload session is named and what a client is told about it.

An upload session (:class:`origin.uploadsessions.Uploads`) is named by its repository and an
upload id; every answer about it carries the same three headers, which tell the client where
the session is and how many bytes it holds. Pure functions, no I/O.

Guarantees:
- Upload ids are uuid4 (32 hex digits, or dashed as registry:2 writes them):
  :func:`valid_upload_id` refuses anything else with ``BLOB_UPLOAD_UNKNOWN`` (404), so a
  request's id never reaches a path unless it has that form. :data:`UPLOAD_ID` is the same
  pattern, for walks of the ``_uploads`` directories (:func:`origin.uploadtimes.stale_sessions`).
- :func:`session_headers` gives ``Location`` (``/v2/<name>/blobs/uploads/<id>``, relative: the
  handlers make it absolute), ``Range`` (:func:`range_value`: ``0-<offset-1>``, ``0-0`` for an
  empty session, as registry:2) and ``Docker-Upload-UUID``.
- :func:`range_error` is the 416 ``RANGE_INVALID`` carrying those headers, so a client whose
  chunk does not fit learns where the session stands.
"""

from __future__ import annotations

import re

from aiohttp import hdrs

from regcore import errors

__all__ = ["UPLOAD_ID", "range_error", "range_value", "session_headers", "valid_upload_id"]

UPLOAD_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def valid_upload_id(upload_id: str) -> str:
    """``upload_id`` if it is a uuid; raises BlobUploadUnknown otherwise."""
    if not UPLOAD_ID.fullmatch(upload_id or ""):
        raise errors.BlobUploadUnknown(message="blob upload unknown to registry")
    return upload_id


def range_value(offset: int) -> str:
    """The ``Range`` header for ``offset`` bytes received (``0-0`` when empty, as registry:2)."""
    return f"0-{max(offset - 1, 0)}"


def session_headers(name: str, upload_id: str, offset: int) -> dict[str, str]:
    """``Location``, ``Range`` and ``Docker-Upload-UUID`` of session ``upload_id`` of ``name``
    holding ``offset`` bytes (a new dict: the caller may rewrite ``Location``)."""
    return {
        hdrs.LOCATION: f"/v2/{name}/blobs/uploads/{upload_id}",
        hdrs.RANGE: range_value(offset),
        "Docker-Upload-UUID": upload_id,
    }


def range_error(name: str, upload_id: str, offset: int, detail: str) -> errors.RegistryError:
    """A 416 RANGE_INVALID that tells the client where the upload stands."""
    return errors.RangeInvalid(detail, headers=session_headers(name, upload_id, offset))
