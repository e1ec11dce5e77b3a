"""``GET /v2/<name>/referrers/<digest>``: manifests of this repository whose subject is <digest>.

Always ``200`` with ``Content-Type: application/vnd.oci.image.index.v1+json`` and an OCI index
body (``schemaVersion`` 2, ``manifests``: one descriptor per referrer with ``mediaType``,
``digest``, ``size``, ``artifactType`` and ``annotations``), also for an unknown repository or
subject (an empty list). ``?artifactType=X`` keeps only descriptors of that artifact type and
adds ``OCI-Filters-Applied: artifactType``. A malformed digest is 400 DIGEST_INVALID; a bad
name 400 NAME_INVALID.

Descriptors are built from the stored manifest bytes (see
:func:`regcore.manifest.referrer_descriptor`), ordered by digest; a referrer whose bytes are
missing or no longer parse is left out rather than failing the whole answer.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from origin import state
from origin.manifests import detect_media_type
from regcore import errors
from regcore import manifest as mf
from regcore import mediatypes as mt
from regcore.digest import Digest
from regcore.http import DIGEST, NAME
from regcore.reference import validate_name
from regcore.storage.interfaces import BlobReader


async def list_referrers(request: web.Request) -> web.Response:
    name = validate_name(request.match_info["name"])
    subject = Digest.parse(request.match_info["digest"])
    wanted = request.query.get("artifactType")
    repos = request.app[state.REPOS]
    store = request.app[state.STORE]
    descriptors: list[dict[str, Any]] = []
    if await repos.repo_exists(name):
        persist = not request.app.get(state.READONLY, False)
        for digest in await repos.list_referrers(name, subject, persist=persist):
            desc = await _descriptor(store, digest)
            if desc is None:
                continue
            if wanted and desc.get("artifactType") != wanted:
                continue
            descriptors.append(desc)
    body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
    headers = {"Content-Type": mt.OCI_INDEX}
    if wanted:
        headers["OCI-Filters-Applied"] = "artifactType"
    return web.Response(status=200, body=json.dumps(body).encode(), headers=headers)


async def _descriptor(store: BlobReader, digest: Digest) -> dict[str, Any] | None:
    try:
        raw = await store.read_bytes(digest)
    except errors.RegistryError:
        return None
    return referrer_entry(raw, digest)


def referrer_entry(raw: bytes, digest: Digest) -> dict[str, Any] | None:
    """The descriptor this API lists for the stored manifest ``raw`` (also what replication
    writes into a referrers tag schema index); None when ``raw`` does not parse or does not
    hash to ``digest``."""
    try:
        parsed = mf.parse_manifest(
            raw, detect_media_type(raw), digest_algorithm=digest.algorithm, max_bytes=len(raw)
        )
    except errors.RegistryError:
        return None
    if parsed.digest != digest:
        return None
    return mf.referrer_descriptor(parsed)


def add_routes(app: web.Application) -> None:
    app.router.add_route("GET", f"/v2/{NAME}/referrers/{DIGEST}", list_referrers, name="referrers")
