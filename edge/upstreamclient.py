"""What the edge needs from a registry client: the :class:`UpstreamClient` protocol.

:class:`regcore.client.RegistryClient` is the implementation (token dance, token cache,
redirects without credentials, retries of idempotent requests, Range resume); the edge's
handlers, fills, pass-through and access checks are typed against this protocol only, so
anything that answers these calls the same way can stand in for it.

Every method raises :mod:`regcore.errors` exceptions for upstream refusals (BlobUnknown,
ManifestUnknown, Unauthorized, Denied, TooManyRequests, UpstreamUnavailable...); the errors
mapped from an upstream's answer carry ``from_upstream=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import aiohttp

    from regcore.client import BlobStream, FetchedManifest, ManifestHead

__all__ = ["UpstreamClient"]


class UpstreamClient(Protocol):
    """One upstream registry as the edge uses it (see the module docstring)."""

    async def head_manifest(self, repo: str, ref: str, accept: Sequence[str] = ()) -> ManifestHead:
        """Digest, media type and size of a manifest (``HEAD``; not a pull on Docker Hub)."""
        ...

    async def get_manifest(
        self, repo: str, ref: str, accept: Sequence[str] = ()
    ) -> FetchedManifest:
        """A manifest's bytes verbatim, checked against its digest."""
        ...

    async def head_blob(self, repo: str, digest: str) -> int:
        """A blob's size without downloading it."""
        ...

    def blob_stream(
        self, repo: str, digest: str, *, offset: int = 0, end: int | None = None
    ) -> BlobStream:
        """A resumable stream of ``blob[offset:end]`` (``end`` exclusive; not yet opened)."""
        ...

    async def list_tags(
        self, repo: str, n: int | None = None, last: str | None = None
    ) -> tuple[list[str], str | None]:
        """One page of tags and the next page's link."""
        ...

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        """Any request with the client's auth; the caller releases the response."""
        ...

    async def close(self) -> None:
        """Release what the client owns (not a session it was given)."""
        ...
