"""Large test blobs: deterministic bytes and a monolithic push that does not warn.

:func:`harness.oci_http.push_blob` hands aiohttp raw ``bytes``; above 1 MiB aiohttp 3.x emits a
``ResourceWarning`` ("Sending a large body directly with raw bytes might lock the event loop"),
which the test suite turns into an error. :func:`push_large_blob` sends the same two requests
(POST, then one PUT with ``?digest=``) with the body wrapped in :class:`io.BytesIO`.
"""

from __future__ import annotations

import hashlib
import io
import random
from urllib.parse import urljoin

import aiohttp

from harness.images import Image, ImageIndex
from harness.oci_http import UnexpectedStatus, push_manifest


def random_blob(size: int, seed: int) -> bytes:
    """``size`` pseudo-random bytes, the same for the same ``seed`` (incompressible)."""
    return random.Random(seed).randbytes(size)


async def push_large_blob(
    session: aiohttp.ClientSession, base_url: str, repo: str, data: bytes
) -> str:
    """Upload ``data`` monolithically to ``base_url`` (a registry) under ``repo``; return
    its digest. Raises :class:`harness.oci_http.UnexpectedStatus` on a non-spec answer."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with session.post(f"{base_url}/v2/{repo}/blobs/uploads/") as resp:
        if resp.status != 202:
            raise UnexpectedStatus("POST", str(resp.url), resp.status, await resp.read())
        location = urljoin(f"{base_url}/", resp.headers["Location"])
    sep = "&" if "?" in location else "?"
    async with session.put(
        f"{location}{sep}digest={digest}",
        data=io.BytesIO(data),
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
    ) as resp:
        if resp.status != 201:
            raise UnexpectedStatus("PUT", str(resp.url), resp.status, await resp.read())
    return digest


async def push_large_image(
    session: aiohttp.ClientSession, base_url: str, repo: str, tag: str, item: Image | ImageIndex
) -> str:
    """:func:`harness.oci_http.push_image` with :func:`push_large_blob` for the blobs (no
    ResourceWarning for MiB-sized layers); returns the digest the registry reports."""
    children = item.images if isinstance(item, ImageIndex) else (item,)
    for child in children:
        for data in child.blobs().values():
            await push_large_blob(session, base_url, repo, data)
        if isinstance(item, ImageIndex):
            await push_manifest(
                session, base_url, repo, child.digest, child.manifest, child.media_type
            )
    return await push_manifest(session, base_url, repo, tag, item.manifest, item.media_type)
