"""Manifest handlers (GET/HEAD ``/v2/<name>/manifests/<reference>``). Work in progress."""

from __future__ import annotations

from aiohttp import web

from regcore import errors


async def get_manifest(request: web.Request) -> web.StreamResponse:
    raise errors.Unavailable(message="manifests are not served yet")


async def tags_list(request: web.Request) -> web.StreamResponse:
    raise errors.Unavailable(message="tags are not served yet")


async def referrers(request: web.Request) -> web.StreamResponse:
    raise errors.Unavailable(message="referrers are not served yet")
