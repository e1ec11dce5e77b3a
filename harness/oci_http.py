"""Raw OCI distribution HTTP for tests (aiohttp): push blobs/manifests, fetch them back.

Deliberately tiny and literal (one POST + one monolithic PUT per blob, no auth, no retries): it
is for tests that must control exactly which requests reach a registry. The real client is
``regcore.client``. Every function raises :class:`UnexpectedStatus` (status + body) when the
registry answers with anything but the status the spec prescribes.
"""

from __future__ import annotations

import hashlib
import io
from urllib.parse import urljoin

import aiohttp

from harness.images import Image, ImageIndex
from regcore.mediatypes import DEFAULT_ACCEPT


class UnexpectedStatus(RuntimeError):
    """The registry answered ``status`` where the spec prescribes another; ``body`` is kept."""

    def __init__(self, method: str, url: str, status: int, body: bytes) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        super().__init__(f"{method} {url} -> {status}: {body[:500]!r}")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _expect(resp: aiohttp.ClientResponse, *statuses: int) -> None:
    if resp.status not in statuses:
        raise UnexpectedStatus(resp.method, str(resp.url), resp.status, await resp.read())


async def push_blob(session: aiohttp.ClientSession, base_url: str, repo: str, data: bytes) -> str:
    """Upload ``data`` (POST to start, one PUT with ``?digest=``); return its digest.

    The body goes as a stream (``io.BytesIO``): aiohttp warns about large raw ``bytes`` bodies.
    """
    digest = _digest(data)
    async with session.post(f"{base_url}/v2/{repo}/blobs/uploads/") as resp:
        await _expect(resp, 202)
        location = urljoin(f"{base_url}/", resp.headers["Location"])
    sep = "&" if "?" in location else "?"
    async with session.put(
        f"{location}{sep}digest={digest}",
        data=io.BytesIO(data),
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
    ) as resp:
        await _expect(resp, 201)
    return digest


async def push_manifest(
    session: aiohttp.ClientSession,
    base_url: str,
    repo: str,
    reference: str,
    body: bytes,
    media_type: str,
) -> str:
    """PUT a manifest under a tag or digest; return the digest the registry reports."""
    async with session.put(
        f"{base_url}/v2/{repo}/manifests/{reference}",
        data=body,
        headers={"Content-Type": media_type},
    ) as resp:
        await _expect(resp, 201)
        return resp.headers.get("Docker-Content-Digest", _digest(body))


async def push_image(
    session: aiohttp.ClientSession, base_url: str, repo: str, tag: str, item: Image | ImageIndex
) -> str:
    """Push an :mod:`harness.images` image or index (blobs, children by digest, then the tag)."""
    children = item.images if isinstance(item, ImageIndex) else (item,)
    for child in children:
        for data in child.blobs().values():
            await push_blob(session, base_url, repo, data)
        if isinstance(item, ImageIndex):
            await push_manifest(
                session, base_url, repo, child.digest, child.manifest, child.media_type
            )
    return await push_manifest(session, base_url, repo, tag, item.manifest, item.media_type)


async def get_blob(session: aiohttp.ClientSession, base_url: str, repo: str, digest: str) -> bytes:
    """GET a blob (following redirects); raises :class:`ValueError` if the bytes mismatch."""
    async with session.get(f"{base_url}/v2/{repo}/blobs/{digest}") as resp:
        await _expect(resp, 200)
        data = await resp.read()
    if _digest(data) != digest:
        raise ValueError(f"blob {digest} arrived with digest {_digest(data)}")
    return data


async def get_manifest(
    session: aiohttp.ClientSession,
    base_url: str,
    repo: str,
    reference: str,
    accept: tuple[str, ...] = DEFAULT_ACCEPT,
) -> tuple[bytes, str, str]:
    """GET a manifest; return ``(body, content_type, docker_content_digest)``."""
    async with session.get(
        f"{base_url}/v2/{repo}/manifests/{reference}", headers={"Accept": ", ".join(accept)}
    ) as resp:
        await _expect(resp, 200)
        body = await resp.read()
        return (
            body,
            resp.headers.get("Content-Type", ""),
            resp.headers.get("Docker-Content-Digest", ""),
        )
