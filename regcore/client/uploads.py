"""Blob uploads through an :class:`~regcore.client.exchange.Exchange` (the push side of
:class:`~regcore.client.registry.RegistryClient`, for tests, bench and tooling).

The spec's upload session: ``POST /v2/<name>/blobs/uploads/`` (202 + ``Location``), then
``PATCH`` chunks to the latest ``Location`` (each answer carries the next one), then
``PUT <location>?digest=<digest>`` (201). Uploads are writes: never retried, and a streamed
body (async iterable) is sent exactly once. ``Location`` values are used verbatim (their
``_state`` query is opaque and signed), relative ones resolved against the answering URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence

import aiohttp
from yarl import URL

from regcore import errors
from regcore.client.auth import repository_scope
from regcore.client.exchange import Exchange
from regcore.digest import Digest, Hasher

_OCTETS = "application/octet-stream"


async def push_blob(
    client: Exchange,
    repo: str,
    data: bytes | AsyncIterable[bytes],
    digest: str | None,
    chunk_size: int | None,
) -> str:
    """See :meth:`RegistryClient.push_blob`."""
    scopes = (repository_scope(repo, ("pull", "push")),)
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data)
        digest = digest or str(Digest.of(data))
    resp = await client.expect(
        "POST", f"/v2/{repo}/blobs/uploads/", (202,), "upload", scopes=scopes
    )
    async with resp:
        location = _location(resp)
    if isinstance(data, bytes) and chunk_size is None:
        return await _finish(client, location, digest or "", scopes, data)
    if isinstance(data, bytes):
        assert chunk_size is not None and chunk_size > 0
        for start in range(0, len(data), chunk_size):
            piece = data[start : start + chunk_size]
            headers = {
                "Content-Type": _OCTETS,
                "Content-Range": f"{start}-{start + len(piece) - 1}",
                "Content-Length": str(len(piece)),
            }
            resp = await client.expect(
                "PATCH", location, (202,), "upload", headers=headers, data=piece, scopes=scopes
            )
            async with resp:
                location = _location(resp)
    else:
        hasher = Hasher(Digest.parse(digest).algorithm if digest else "sha256")
        resp = await client.expect(
            "PATCH",
            location,
            (202,),
            "upload",
            headers={"Content-Type": _OCTETS},
            data=_hashing(data, hasher),
            scopes=scopes,
        )
        async with resp:
            location = _location(resp)
        digest = digest or str(hasher.digest())
    return await _finish(client, location, digest or "", scopes, None)


async def mount_blob(client: Exchange, repo: str, digest: str, from_repo: str) -> bool:
    """See :meth:`RegistryClient.mount_blob`."""
    scopes = (repository_scope(repo, ("pull", "push")), repository_scope(from_repo))
    resp = await client.expect(
        "POST",
        f"/v2/{repo}/blobs/uploads/",
        (201, 202),
        "upload",
        params={"mount": digest, "from": from_repo},
        scopes=scopes,
    )
    async with resp:
        if resp.status == 201:
            return True
        location = _location(resp)
    cancel = await client.request("DELETE", location, scopes=scopes)
    cancel.release()
    return False


async def _finish(
    client: Exchange, location: str, digest: str, scopes: Sequence[str], body: bytes | None
) -> str:
    url = URL(location, encoded=True).extend_query({"digest": digest})
    resp = await client.expect(
        "PUT",
        str(url),
        (201,),
        "upload",
        headers={"Content-Type": _OCTETS},
        data=body or b"",
        scopes=scopes,
    )
    async with resp:
        return resp.headers.get("Docker-Content-Digest") or digest


def _location(resp: aiohttp.ClientResponse) -> str:
    location = resp.headers.get("Location")
    if not location:
        raise errors.UpstreamUnavailable(f"{resp.method} {resp.url.path}: upload without Location")
    return str(resp.url.join(URL(location, encoded=True)))


async def _hashing(source: AsyncIterable[bytes], hasher: Hasher) -> AsyncIterator[bytes]:
    async for chunk in source:
        hasher.update(chunk)
        yield chunk
