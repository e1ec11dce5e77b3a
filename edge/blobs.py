"""Blob handlers (GET/HEAD ``/v2/<name>/blobs/<digest>``). Work in progress."""

from __future__ import annotations

from aiohttp import web

from regcore import errors


async def get_blob(request: web.Request) -> web.StreamResponse:
    raise errors.Unavailable(message="blobs are not served yet")
