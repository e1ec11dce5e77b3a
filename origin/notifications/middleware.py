"""The one place the origin's registry events are made: :func:`events_middleware`.

It sits inside the access middleware (so only requests that were allowed reach it, and the
principal and request id are known) and looks at each finished request's route, method and
status; the handlers know nothing of events. What becomes an event (as registry:2):

=============================================  ======  ==============================
request                                        status  event
=============================================  ======  ==============================
``GET /v2/<name>/manifests/<ref>``             200     pull (tag when ``ref`` is one)
``PUT /v2/<name>/manifests/<ref>``             201     push (tag when ``ref`` is one)
``PUT /v2/<name>/manifests/<digest>?tag=...``  201     one push per tag set (``tag``)
``DELETE /v2/<name>/manifests/<digest|tag>``   202     delete (digest, or tag)
``GET /v2/<name>/blobs/<digest>``              200     pull
``DELETE /v2/<name>/blobs/<digest>``           202     delete
``PUT .../blobs/uploads/<id>``, ``POST ?digest``  201  push
``POST .../blobs/uploads/?mount=&from=``       201     mount (``fromRepository``)
=============================================  ======  ==============================

A PUT by digest that also set tags (the OCI ``?tag=`` parameter, echoed by the handler in
its ``OCI-Tag`` header) makes one push event per tag, each carrying the digest and that one
``target.tag``, as a PUT by each tag would (the envelope format has one tag per target); so
listeners (replication) push the manifest under every tag set. A PUT by digest without
``?tag=`` stays one push event without a tag.

Delete events carry the deleted URL too (registry:2 leaves it empty), so that a listener can
tell a manifest delete from a blob delete. ``HEAD`` requests, partial (206) blob reads, refused or failed requests make no event. A pushed
or pulled manifest's event carries its media type and size (and, with
``notifications.events.includereferences``, its config/layer/child descriptors); blobs are
``application/octet-stream``. Events go to :meth:`origin.notifications.hub.EventHub.emit`
(queued on disk before the answer is sent).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from aiohttp import hdrs, web

from origin import state
from origin.authz import PRINCIPAL, REQUEST_ID
from origin.manifests import detect_media_type
from origin.notifications.events import RequestRecord, SourceRecord, Target, make_event
from origin.notifications.hub import EventHub
from regcore import errors
from regcore import manifest as mf
from regcore.digest import Digest
from regcore.http import Handler
from regcore.reference import is_valid_tag

__all__ = ["EVENTS", "SOURCE", "events_middleware"]

EVENTS: web.AppKey[EventHub] = web.AppKey("origin_events", EventHub)
SOURCE: web.AppKey[SourceRecord] = web.AppKey("origin_event_source", SourceRecord)
_OCTETS = "application/octet-stream"


@web.middleware
async def events_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """See the module docstring."""
    resp = await handler(request)
    hub = request.app.get(EVENTS)
    if hub is None or resp.status not in (200, 201, 202) or request.method == "HEAD":
        return resp
    action, target = await _describe(request, resp)
    if action is not None and target is not None:
        principal = request.get(PRINCIPAL)
        record = RequestRecord(
            id=request.get(REQUEST_ID) or uuid.uuid4().hex,
            addr=principal.address if principal is not None else (request.remote or ""),
            host=request.host,
            method=request.method,
            useragent=request.headers.get(hdrs.USER_AGENT, ""),
        )
        events = [
            make_event(
                action,
                t,
                request=record,
                actor=principal.login if principal is not None else "",
                source=request.app[SOURCE],
            )
            for t in _per_tag(request, resp, action, target)
        ]
        await hub.emit(events)
    return resp


def _per_tag(
    request: web.Request, resp: web.StreamResponse, action: str, target: Target
) -> list[Target]:
    """A manifest push by digest that set tags (``?tag=``, echoed in ``OCI-Tag``): one target
    per tag, like a push by each tag; any other event: ``[target]`` unchanged."""
    if action != "push" or target.tag is not None or request.method != "PUT":
        return [target]
    resource = request.match_info.route.resource
    if resource is None or "/manifests/" not in resource.canonical:
        return [target]
    echoed = resp.headers.get("OCI-Tag", "")
    tags = [t.strip() for t in echoed.split(",") if is_valid_tag(t.strip())]
    return [dataclasses.replace(target, tag=t) for t in tags] or [target]


def _base_url(request: web.Request) -> str:
    host = getattr(getattr(request.app[state.CONFIG], "http", None), "host", None)
    return host.rstrip("/") if host else f"{request.scheme}://{request.host}"


async def _describe(
    request: web.Request, resp: web.StreamResponse
) -> tuple[str | None, Target | None]:
    resource = request.match_info.route.resource
    if resource is None or "name" not in request.match_info:
        return None, None
    name = request.match_info["name"]
    pattern, method, status = resource.canonical, request.method, resp.status
    digest = resp.headers.get("Docker-Content-Digest")
    if "/manifests/" in pattern:
        reference = request.match_info.get("reference", "")
        tag = reference if is_valid_tag(reference) else None
        if method == "DELETE" and status == 202:
            url = f"{_base_url(request)}/v2/{name}/manifests/{reference}"
            return "delete", Target(name, digest=None if tag else reference, url=url, tag=tag)
        if not digest or (method, status) not in (("GET", 200), ("PUT", 201)):
            return None, None
        body = resp.body if method == "GET" and isinstance(resp, web.Response) else None
        target = await _manifest_target(request, name, digest, body, tag)
        return ("pull" if method == "GET" else "push"), target
    if resource.name == "blob":
        ref = request.match_info.get("digest", "")
        if method == "DELETE" and status == 202:
            url = f"{_base_url(request)}/v2/{name}/blobs/{ref}"
            return "delete", Target(name, digest=ref, url=url)
        if method == "GET" and status == 200:
            url = f"{_base_url(request)}/v2/{name}/blobs/{ref}"
            return "pull", Target(name, _OCTETS, resp.content_length, ref, url)
        return None, None
    if status == 201 and digest and resource.name in ("upload_start", "upload"):
        size = await request.app[state.STORE].stat(Digest.parse(digest))
        url = f"{_base_url(request)}/v2/{name}/blobs/{digest}"
        query = request.query
        if method == "POST" and "mount" in query and "digest" not in query:
            return "mount", Target(name, _OCTETS, size, digest, url, from_repository=query["from"])
        return "push", Target(name, _OCTETS, size, digest, url)
    return None, None


async def _manifest_target(
    request: web.Request, name: str, digest: str, body: Any, tag: str | None
) -> Target:
    raw = body if isinstance(body, bytes) else None
    if raw is None:
        try:
            raw = await request.app[state.STORE].read_bytes(Digest.parse(digest))
        except errors.RegistryError:
            raw = b""
    media_type = detect_media_type(raw) if raw else None
    references: list[dict[str, Any]] = []
    if raw and request.app[EVENTS].config.includereferences:
        try:
            parsed = mf.parse_manifest(raw, media_type)
            references = [d.to_dict() for d in (*parsed.blobs, *parsed.children)]
        except errors.RegistryError:
            references = []
    return Target(
        repository=name,
        media_type=media_type,
        size=len(raw) or None,
        digest=digest,
        url=f"{_base_url(request)}/v2/{name}/manifests/{digest}",
        tag=tag,
        references=references,
    )
