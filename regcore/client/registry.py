"""``RegistryClient``: the OCI Distribution API of one upstream, for the edge, tests and bench.

Every method goes through :class:`~regcore.client.transport.Transport` (token dance, token
cache, redirects without credentials, retries for GET/HEAD, bounded timeouts) and raises only
:mod:`regcore.errors` exceptions (mapping in :mod:`regcore.client.status`). Reads never
retry writes: POST/PATCH/PUT/DELETE are sent once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from multidict import CIMultiDict

from regcore import USER_AGENT, errors
from regcore.client import uploads
from regcore.client.auth import TokenCache, repository_scope
from regcore.client.exchange import Exchange, read_body
from regcore.client.status import DigestMismatch
from regcore.client.stream import BlobStream, ResumeHook
from regcore.client.transport import RequestHook, Transport
from regcore.digest import Digest, is_digest
from regcore.tlsclient import ClientTLSContexts

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
DEFAULT_MANIFEST_ACCEPT: tuple[str, ...] = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


@dataclass(frozen=True, slots=True)
class ManifestHead:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    body: bytes
    media_type: str
    digest: str


class RegistryClient(Exchange):
    """Async client for one registry at ``base_url``. Use ``async with`` or call :meth:`close`.

    :meth:`request` and :meth:`expect` (any request, with auth, redirects and retries) come
    from :class:`~regcore.client.exchange.Exchange`; this class adds the registry API.

    Without ``session`` the client owns one (no cookie jar, no automatic decompression);
    with one, the caller owns it and :meth:`close` leaves it open. ``on_request`` counts
    every upstream HTTP exchange; ``on_resume(digest, offset)`` every blob stream resume.
    ``tls``: the contexts of a peer with its own TLS settings (see
    :class:`~regcore.client.transport.Transport`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_retry_after: float = 10.0,
        max_resumes: int = 3,
        user_agent: str = USER_AGENT,
        on_request: RequestHook | None = None,
        on_resume: ResumeHook | None = None,
        token_cache: TokenCache | None = None,
        tls: ClientTLSContexts | None = None,
    ) -> None:
        super().__init__(
            Transport(
                base_url,
                session=session,
                username=username,
                password=password,
                token=token,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries=retries,
                backoff=backoff,
                max_retry_after=max_retry_after,
                user_agent=user_agent,
                on_request=on_request,
                token_cache=token_cache,
                tls=tls,
            )
        )
        self.max_resumes = max_resumes
        self.on_resume = on_resume
        self.resumes = 0
        """Blob stream resumes over the client's lifetime (also reported via ``on_resume``)."""

    @property
    def base_url(self) -> str:
        return str(self.transport.base)

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- read API -----------------------------------------------------------------------

    async def ping(self) -> None:
        """``GET /v2/`` (also learns the auth scheme). Raises Unauthorized, UpstreamUnavailable..."""
        resp = await self.expect("GET", "/v2/", (200,), "other", scopes=())
        resp.release()

    async def head_manifest(self, repo: str, ref: str, accept: Sequence[str] = ()) -> ManifestHead:
        """``HEAD`` a manifest (does not count as a pull on Docker Hub).

        Falls back to :meth:`get_manifest` if upstream sends no ``Docker-Content-Digest``.
        Raises ManifestUnknown (404) and the other mapped errors.
        """
        headers = {"Accept": ", ".join(accept or DEFAULT_MANIFEST_ACCEPT)}
        resp = await self.expect(
            "HEAD", _manifest_path(repo, ref), (200,), "manifest", headers=headers
        )
        async with resp:
            digest = resp.headers.get("Docker-Content-Digest")
            media_type = _media_type(resp.headers.get("Content-Type"))
            size = resp.content_length
        if digest and is_digest(digest) and size is not None and media_type:
            return ManifestHead(digest, media_type, size)
        fetched = await self.get_manifest(repo, ref, accept)
        return ManifestHead(fetched.digest, fetched.media_type, len(fetched.body))

    async def get_manifest(
        self, repo: str, ref: str, accept: Sequence[str] = ()
    ) -> FetchedManifest:
        """``GET`` a manifest verbatim (at most 4 MiB).

        The digest is ``ref`` when ``ref`` is a digest, else ``Docker-Content-Digest``, else the
        body's sha256; the body is always checked against it (DigestMismatch, a 502).
        The media type is Content-Type, else the body's ``mediaType``.
        """
        headers = {"Accept": ", ".join(accept or DEFAULT_MANIFEST_ACCEPT)}
        resp = await self.expect(
            "GET", _manifest_path(repo, ref), (200,), "manifest", headers=headers
        )
        async with resp:
            if (resp.content_length or 0) > MAX_MANIFEST_BYTES:
                raise errors.UpstreamUnavailable(f"{repo}:{ref}: upstream manifest exceeds 4 MiB")
            body = await read_body(resp, MAX_MANIFEST_BYTES)
            header_digest = resp.headers.get("Docker-Content-Digest")
            media_type = _media_type(resp.headers.get("Content-Type"))
        if is_digest(ref):
            expected = ref
        elif header_digest and is_digest(header_digest):
            expected = header_digest
        else:
            expected = str(Digest.of(body))
        parsed = Digest.parse(expected)
        actual = Digest.of(body, parsed.algorithm)
        if actual != parsed:
            raise DigestMismatch(f"manifest {repo}@{expected}: body hashes to {actual}")
        if not media_type or media_type in ("application/json", "text/plain"):
            media_type = _body_media_type(body) or media_type or "application/octet-stream"
        return FetchedManifest(body, media_type, expected)

    async def head_blob(self, repo: str, digest: str) -> int:
        """Size of a blob (``HEAD``; redirects followed). Raises BlobUnknown on 404.

        Some storage back ends refuse HEAD on a URL signed for GET (403/405 after the
        redirect) or omit the length: then a ``GET`` of the first byte reads the size from
        ``Content-Range`` (the body is not downloaded).
        """
        try:
            resp = await self.expect("HEAD", f"/v2/{repo}/blobs/{digest}", (200,), "blob")
        except (errors.Denied, errors.Unsupported):
            size = None
        else:
            async with resp:
                size = resp.content_length
        if size is None:
            async with self.blob_stream(repo, digest, end=1) as probe:
                size = probe.total_size
        if size is None:
            raise errors.UpstreamUnavailable(f"blob {digest}: upstream sent no size")
        return size

    def blob_stream(
        self,
        repo: str,
        digest: str,
        *,
        offset: int = 0,
        end: int | None = None,
        verify: bool = False,
        chunk_size: int = 256 * 1024,
    ) -> BlobStream:
        """A resumable stream of ``blob[offset:end]`` (``end`` exclusive); see :mod:`.stream`."""
        return BlobStream(
            self.transport,
            repo,
            digest,
            offset=offset,
            end=end,
            chunk_size=chunk_size,
            max_resumes=self.max_resumes,
            verify=verify,
            on_resume=self._count_resume,
        )

    def _count_resume(self, digest: str, offset: int) -> None:
        self.resumes += 1
        if self.on_resume is not None:
            self.on_resume(digest, offset)

    async def get_blob(self, repo: str, digest: str) -> bytes:
        """A whole blob in memory, verified against ``digest`` (tests, small blobs)."""
        async with self.blob_stream(repo, digest, verify=True) as stream:
            return await stream.read_all()

    async def list_tags(
        self, repo: str, n: int | None = None, last: str | None = None
    ) -> tuple[list[str], str | None]:
        """One page of tags and the ``Link`` target of the next page (``None`` on the last)."""
        params = _page_params(n, last)
        resp = await self.expect("GET", f"/v2/{repo}/tags/list", (200,), "tags", params=params)
        async with resp:
            doc = json.loads(await read_body(resp, 16 * 1024 * 1024))
            link = _next_link(resp.headers.get("Link"))
        return list(doc.get("tags") or []), link

    async def catalog(
        self, n: int | None = None, last: str | None = None
    ) -> tuple[list[str], str | None]:
        """One page of ``/v2/_catalog`` and the next page's ``Link`` target."""
        resp = await self.expect(
            "GET", "/v2/_catalog", (200,), "catalog", params=_page_params(n, last)
        )
        async with resp:
            doc = json.loads(await read_body(resp, 16 * 1024 * 1024))
            link = _next_link(resp.headers.get("Link"))
        return list(doc.get("repositories") or []), link

    async def get_referrers(
        self, repo: str, digest: str, artifact_type: str | None = None
    ) -> tuple[bytes, CIMultiDict[str]]:
        """``GET /v2/<repo>/referrers/<digest>``: the raw index and the response headers."""
        params = {"artifactType": artifact_type} if artifact_type else None
        resp = await self.expect(
            "GET", f"/v2/{repo}/referrers/{digest}", (200,), "referrers", params=params
        )
        async with resp:
            body = await read_body(resp, MAX_MANIFEST_BYTES)
            headers = CIMultiDict(resp.headers)
        return body, headers

    async def list_referrers(
        self, repo: str, digest: str, *, max_pages: int = 16
    ) -> list[dict[str, Any]] | None:
        """Every referrer descriptor of ``digest`` (``Link`` pages followed, at most
        ``max_pages``), or ``None`` when the registry has no referrers API (it answers 404, as
        docker-registry 2.8 does). Entries without a string ``digest`` are left out."""
        out: list[dict[str, Any]] = []
        path: str | None = f"/v2/{repo}/referrers/{digest}"
        for page_no in range(max_pages):
            if path is None:
                break
            resp = await self.expect(
                "GET", path, (200, 404) if not page_no else (200,), "referrers"
            )
            async with resp:
                if resp.status == 404:
                    return None
                doc = json.loads(await read_body(resp, MAX_MANIFEST_BYTES))
                path = _next_link(resp.headers.get("Link"))
            page = doc.get("manifests") if isinstance(doc, dict) else None
            out.extend(
                d for d in page or () if isinstance(d, dict) and isinstance(d.get("digest"), str)
            )
        return out

    # -- write API (tests, bench) -----------------------------------------------------------

    async def push_blob(
        self,
        repo: str,
        data: bytes | AsyncIterable[bytes],
        digest: str | None = None,
        chunk_size: int | None = None,
    ) -> str:
        """Upload a blob; returns its digest.

        ``bytes`` without ``chunk_size``: POST + monolithic PUT. With ``chunk_size``: POST,
        PATCH per chunk (``Content-Range``), PUT. An async iterable: POST, one streamed
        PATCH (hashed on the way when ``digest`` is not given), PUT. Never retried.
        Raises DigestInvalid / BlobUploadInvalid / ... as the upstream answers.
        """
        return await uploads.push_blob(self, repo, data, digest, chunk_size)

    async def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; ``True`` when mounted, ``False`` when upstream declined
        (the upload session it opened instead is cancelled)."""
        return await uploads.mount_blob(self, repo, digest, from_repo)

    async def push_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or digest; returns its digest. Raises ManifestInvalid,
        ManifestBlobUnknown, ... as the upstream answers."""
        headers = {"Content-Type": media_type}
        scopes = (repository_scope(repo, ("pull", "push")),)
        resp = await self.expect(
            "PUT",
            _manifest_path(repo, ref),
            (201,),
            "manifest",
            headers=headers,
            data=body,
            scopes=scopes,
        )
        async with resp:
            return resp.headers.get("Docker-Content-Digest") or str(Digest.of(body))

    async def delete_manifest(self, repo: str, digest: str) -> None:
        """DELETE a manifest by digest (202). Raises ManifestUnknown, Unsupported (deletes off)."""
        resp = await self.expect("DELETE", _manifest_path(repo, digest), (202,), "manifest")
        resp.release()

    async def delete_blob(self, repo: str, digest: str) -> None:
        """DELETE a blob (202). Raises BlobUnknown, Unsupported (deletes disabled)."""
        resp = await self.expect("DELETE", f"/v2/{repo}/blobs/{digest}", (202,), "blob")
        resp.release()


def _manifest_path(repo: str, ref: str) -> str:
    return f"/v2/{repo}/manifests/{ref}"


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip()


def _body_media_type(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    value = doc.get("mediaType") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def _page_params(n: int | None, last: str | None) -> dict[str, str] | None:
    params: dict[str, str] = {}
    if n is not None:
        params["n"] = str(n)
    if last is not None:
        params["last"] = last
    return params or None


def _next_link(header: str | None) -> str | None:
    """The target of ``Link: <...>; rel="next"``."""
    if not header:
        return None
    for part in header.split(","):
        target, _, rest = part.partition(";")
        if 'rel="next"' in rest.replace(" ", "") or "rel=next" in rest.replace(" ", ""):
            return target.strip().strip("<>")
    return None
