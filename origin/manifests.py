"""``GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference>`` (tag or digest).

PUT guarantees:

* ``Expect: 100-continue`` is answered when the body is about to be read (after access
  control, the read-only check, the name, reference and ``?tag=`` checks and an announced
  size over the limit); a refusal before that comes instead of the 100
  (:mod:`regcore.expectcontinue`);
* the body is read up to the manifest limit (app key ``MAX_MANIFEST_BYTES``, 4 MiB by
  default); a larger body is refused with 413 MANIFEST_INVALID before anything is stored;
* the body is validated by :func:`regcore.manifest.parse_manifest` (schema 1, malformed JSON,
  media-type mismatches -> 400 MANIFEST_INVALID) and stored byte for byte;
* every config/layer blob must be linked into this repository and present in the store, and
  every child of an index must be a manifest of this repository (registry:2's rule), else
  400 MANIFEST_BLOB_UNKNOWN with ``detail.digest``; a digest reference must equal the digest
  of the body, else 400 DIGEST_INVALID; a malformed tag is 400 TAG_INVALID;
* all checks happen before the first write, so a refused PUT leaves the store as it was.
  Writes go blob -> revision link -> referrers index -> tag, each atomic, so a crash leaves
  at most an unreferenced blob or an untagged revision;
* ``201 Created`` with ``Location: /v2/<name>/manifests/<digest>``, ``Docker-Content-Digest``
  and, when the manifest has a ``subject``, ``OCI-Subject: <subject digest>``;
* a PUT by digest may set tags in the same request (the spec's draft ``?tag=`` parameter,
  repeated): each is validated before anything is stored (400 TAG_INVALID; more than
  :data:`MAX_TAG_PARAMS` is 414 TAG_INVALID), each points at the digest of the reference
  (a sha512 reference stays sha512 in every answer, by digest or by tag), and the tags set
  are echoed in one ``OCI-Tag`` header (comma-separated). On a PUT by tag ``?tag=`` is
  ignored (and not echoed).

GET/HEAD serve stored bytes verbatim (never a converted manifest) with their exact media
type, ``Content-Length``, ``Docker-Content-Digest`` and ``ETag: "<digest>"``, negotiated
against the client's ``Accept`` as the edge and registry:2 do
(:func:`regcore.mediatypes.negotiate`; its module docstring lists the documented
differences): an OCI manifest or index the client did not list is 404 MANIFEST_UNKNOWN, by
tag and by digest; a Docker manifest list asked for by tag by a client that lists manifest
types but not the list type is answered with its linux/amd64 child (that child's bytes,
media type, digest and ETag; 404 MANIFEST_UNKNOWN when the list has none or the child is not
a manifest of the repository, 400 MANIFEST_INVALID when the child is schema 2 and the client
did not list schema 2). By digest nothing is narrowed. HEAD answers exactly the headers of
the GET; ``If-None-Match`` is compared with the digest served. Signature and scan policies
judge the manifest served. An unknown tag or digest, or a malformed tag, is 404
MANIFEST_UNKNOWN; a malformed digest is 400 DIGEST_INVALID.

DELETE by digest removes the revision and every tag pointing at it; DELETE by tag removes the
tag only; both answer 202. 405 UNSUPPORTED when deletes are disabled or the registry is
read-only.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from origin import state
from origin.blobs import location
from origin.policy import check_pull
from origin.repository import Repositories, subject_digest
from regcore import errors
from regcore import manifest as mf
from regcore import mediatypes as mt
from regcore.digest import Digest
from regcore.expectcontinue import defer_continue, send_continue
from regcore.http import NAME, REFERENCE, etag_matches
from regcore.reference import Tag, is_valid_tag, parse_reference, validate_name

_READ_CHUNK = 64 * 1024
#: Most ``?tag=`` parameters one manifest PUT may set (the spec asks for at least 10).
MAX_TAG_PARAMS = 100


# -- helpers ------------------------------------------------------------------------------
def _max_bytes(app: web.Application) -> int:
    return app.get(state.MAX_MANIFEST_BYTES, mf.MAX_MANIFEST_BYTES)


def _check_writable(app: web.Application) -> None:
    if app.get(state.READONLY, False):
        raise errors.ReadOnly()


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` without buffering it all."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise errors.ManifestTooLarge({"size": declared, "limit": limit})
    await send_continue(request)  # a deferred 100 Continue: the body is read now
    buf = bytearray()
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        buf += chunk
        if len(buf) > limit:
            raise errors.ManifestTooLarge({"size": f">{limit}", "limit": limit})
    return bytes(buf)


def detect_media_type(raw: bytes) -> str:
    """The media type of stored manifest bytes: its ``mediaType`` field, else a best guess.

    Never raises: bytes that are not a JSON object are served as ``application/json``
    (registry:2 never stores such bytes as a manifest, but a damaged root might).
    """
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return mt.JSON
    if not isinstance(doc, dict):
        return mt.JSON
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if doc.get("schemaVersion") == 1:
        return mt.DOCKER_SCHEMA1_SIGNED if "signatures" in doc else mt.DOCKER_SCHEMA1_MANIFEST
    if "manifests" in doc:
        return mt.OCI_INDEX
    if "config" in doc:
        return mt.OCI_MANIFEST
    return mt.JSON


async def _resolve(repos: Repositories, name: str, reference: str) -> tuple[Digest, Tag | None]:
    """Tag or digest -> a digest that is a revision of ``name``; 404 MANIFEST_UNKNOWN otherwise."""
    try:
        ref = parse_reference(reference)
    except errors.TagInvalid:
        raise errors.ManifestUnknown({"reference": reference[:140]}) from None
    digest = await repos.resolve_tag(name, ref.name) if isinstance(ref, Tag) else ref
    if not await repos.revision_exists(name, digest):  # a tag left pointing at a deleted one
        raise errors.ManifestUnknown({"digest": str(digest)})
    return digest, ref if isinstance(ref, Tag) else None


def _descriptor_headers(digest: Digest, media_type: str, size: int) -> dict[str, str]:
    return {
        "Content-Type": media_type,
        "Content-Length": str(size),
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
    }


# -- GET / HEAD ---------------------------------------------------------------------------
async def get_manifest(request: web.Request) -> web.StreamResponse:
    name = validate_name(request.match_info["name"])
    repos = request.app[state.REPOS]
    digest, tag = await _resolve(repos, name, request.match_info["reference"])
    raw = await _read_manifest(request.app, digest)
    media_type = detect_media_type(raw)
    accepted = mt.parse_accept(request.headers.getall("Accept", []))
    listed = digest  # what the reference names; ``digest`` becomes what is served
    if mt.negotiate(media_type, accepted, by_tag=tag is not None) == "narrow":
        digest, raw, media_type = await _platform_child(request.app, repos, name, listed, raw)
        mt.check_platform_child(media_type, accepted)
    await check_pull(request, name, digest, raw)  # signature / scan policies (origin/policy.py)
    headers = _descriptor_headers(digest, media_type, len(raw))
    ops = request.app[state.OPS]
    ops.pulled(name, listed, tag.name if tag is not None else None)
    if digest != listed:  # a narrowed list: its child was pulled too
        ops.pulled(name, digest, None)
    if etag_matches(request.headers.get("If-None-Match"), digest):
        headers.pop("Content-Length")
        return web.Response(status=304, headers=headers)
    if request.method == "HEAD":
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_length = len(raw)
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    headers.pop("Content-Length")
    return web.Response(status=200, body=raw, headers=headers)


async def _read_manifest(app: web.Application, digest: Digest) -> bytes:
    """The stored bytes of revision ``digest``; 404 MANIFEST_UNKNOWN when the blob is gone."""
    try:
        return await app[state.STORE].read_bytes(digest)
    except errors.BlobUnknown:
        raise errors.ManifestUnknown({"digest": str(digest)}) from None


async def _platform_child(
    app: web.Application, repos: Repositories, name: str, list_digest: Digest, body: bytes
) -> tuple[Digest, bytes, str]:
    """The linux/amd64 child a Docker list (``body``) is narrowed to: (digest, bytes, media
    type of the stored bytes). 404 MANIFEST_UNKNOWN when the list has no such entry or the
    entry is not a manifest of ``name`` (registry:2's answers)."""
    child = mt.find_platform_child(body)
    if child is None:
        raise errors.ManifestUnknown(
            {"digest": str(list_digest)}, message="manifest list has no linux/amd64 manifest"
        )
    digest = Digest.parse(child.digest)
    if not await repos.revision_exists(name, digest):
        raise errors.ManifestUnknown({"digest": child.digest, "list": str(list_digest)})
    raw = await _read_manifest(app, digest)
    return digest, raw, detect_media_type(raw)


# -- PUT ----------------------------------------------------------------------------------
async def put_manifest(request: web.Request) -> web.Response:
    app = request.app
    _check_writable(app)
    name = validate_name(request.match_info["name"])
    ref = parse_reference(request.match_info["reference"])
    extra_tags = _tag_params(request) if isinstance(ref, Digest) else []
    body = await _read_body(request, _max_bytes(app))
    algorithm = ref.algorithm if isinstance(ref, Digest) else "sha256"
    parsed = mf.parse_manifest(
        body,
        request.headers.get("Content-Type"),
        digest_algorithm=algorithm,
        max_bytes=_max_bytes(app),
    )
    if isinstance(ref, Digest) and ref != parsed.digest:
        raise errors.DigestInvalid(
            {"expected": str(ref), "actual": str(parsed.digest)},
            message="manifest digest did not match the reference",
        )
    repos: Repositories = app[state.REPOS]
    tags = [ref.name] if isinstance(ref, Tag) else extra_tags
    used = [d.digest for d in (*parsed.required_blobs, *parsed.children)]
    # Shared gc lock, immutability and quota checks, from the checks to the last tag write.
    async with app[state.OPS].manifest_put(
        name, tags, parsed.digest, parsed.size, used, lambda t: _tag_target(repos, name, t)
    ):
        headers = await _store_manifest(request, repos, name, parsed, tags)
    if extra_tags:
        headers["OCI-Tag"] = ", ".join(extra_tags)
    _count(app, "manifests_pushed", "Manifests stored by PUT")
    return web.Response(status=201, headers=headers)


async def _store_manifest(
    request: web.Request,
    repos: Repositories,
    name: str,
    parsed: mf.ParsedManifest,
    tags: list[str],
) -> dict[str, str]:
    """Check references, then write blob -> revision -> referrers link -> tags."""
    await _verify_references(request.app, repos, name, parsed)
    store = request.app[state.STORE]
    digest = parsed.digest
    if await store.stat(digest) != parsed.size:  # equal digests mean equal bytes
        digest = await store.put_bytes(parsed.raw, parsed.digest)
    await repos.link_revision(name, digest)
    headers = {
        "Location": location(request, f"/v2/{name}/manifests/{digest}"),
        "Docker-Content-Digest": str(digest),
    }
    if parsed.subject is not None:
        await repos.ensure_referrers_index(name)  # a root registry:2 wrote has none yet
        await repos.link_referrer(name, parsed.subject.digest, digest)
        headers["OCI-Subject"] = str(parsed.subject.digest)
    for tag in tags:
        await repos.tag(name, tag, digest)
    return headers


async def _tag_target(repos: Repositories, name: str, tag: str) -> Digest | None:
    try:
        return await repos.resolve_tag(name, tag)
    except errors.ManifestUnknown:
        return None


class _TooManyTags(errors.TagInvalid):  # type: ignore[misc,valid-type]
    status = 414
    message = "too many tag parameters"


def _tag_params(request: web.Request) -> list[str]:
    """The ``?tag=`` values of a PUT by digest, in order, each once (the spec's draft: tags
    set in the same request). Raises TagInvalid (400) for a malformed one, 414 TAG_INVALID
    for more than :data:`MAX_TAG_PARAMS`; both before anything is read or stored."""
    tags = list(dict.fromkeys(request.query.getall("tag", [])))
    if len(tags) > MAX_TAG_PARAMS:
        raise _TooManyTags({"tags": len(tags), "limit": MAX_TAG_PARAMS})
    for tag in tags:
        if not is_valid_tag(tag):
            raise errors.TagInvalid({"tag": tag[:140]}, message="invalid tag parameter")
    return tags


async def _verify_references(
    app: web.Application, repos: Repositories, name: str, parsed: mf.ParsedManifest
) -> None:
    """Raise MANIFEST_BLOB_UNKNOWN naming every blob and child manifest the repo lacks."""
    store = app[state.STORE]
    missing: list[errors.RegistryError] = []
    for desc in parsed.required_blobs:
        linked = await repos.blob_linked(name, desc.digest)
        if not linked or await store.stat(desc.digest) is None:
            missing.append(errors.ManifestBlobUnknown({"digest": str(desc.digest)}))
    for child in parsed.children:
        exists = await repos.revision_exists(name, child.digest)
        if not exists or await store.stat(child.digest) is None:
            missing.append(
                errors.ManifestBlobUnknown(
                    {"digest": str(child.digest)},
                    message="manifest references a manifest unknown to the repository",
                )
            )
    if missing:
        raise errors.RegistryErrors.of(missing)


# -- DELETE -------------------------------------------------------------------------------
async def delete_manifest(request: web.Request) -> web.Response:
    app = request.app
    _check_writable(app)
    if not app.get(state.DELETE_ENABLED, False):
        raise errors.Unsupported(message="manifest deletion is disabled")
    name = validate_name(request.match_info["name"])
    repos: Repositories = app[state.REPOS]
    reference = request.match_info["reference"]
    if ":" not in reference:  # a tag: removable even if its manifest is already gone
        if not is_valid_tag(reference):
            raise errors.ManifestUnknown({"reference": reference[:140]})
        await repos.resolve_tag(name, reference)
        app[state.OPS].check_delete(name, [reference])  # 409 DENIED for an immutable tag
        await repos.untag(name, reference)
        _count(app, "tags_deleted", "Tags removed by manifest DELETE")
        return web.Response(status=202)
    digest, _ = await _resolve(repos, name, reference)
    tags_of = await repos.tags_for(name, digest)
    app[state.OPS].check_delete(name, tags_of)  # 409 DENIED when an immutable tag points here
    for t in tags_of:
        await repos.untag(name, t)
    try:
        raw = await app[state.STORE].read_bytes(digest, limit=_max_bytes(app) * 4)
    except errors.RegistryError:
        raw = b""
    subject = subject_digest(raw)
    if subject is not None:
        await repos.unlink_referrer(name, subject, digest)
    await repos.unlink_revision(name, digest)
    app[state.OPS].deleted(name)
    _count(app, "manifests_deleted", "Manifest revisions removed by DELETE")
    return web.Response(status=202)


def _count(app: web.Application, name: str, doc: str) -> None:
    """Bump ``quayside_origin_<name>_total`` when the app has an OriginMetrics."""
    metrics: Any = app.get(state.METRICS)
    if metrics is not None and hasattr(metrics, "counter"):
        metrics.counter(name, doc).inc()


def add_routes(app: web.Application) -> None:
    path = f"/v2/{NAME}/manifests/{REFERENCE}"
    resource = app.router.add_resource(path, name="manifest")
    resource.add_route("GET", get_manifest)
    resource.add_route("HEAD", get_manifest)
    resource.add_route("PUT", put_manifest, expect_handler=defer_continue)
    resource.add_route("DELETE", delete_manifest)
