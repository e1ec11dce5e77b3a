"""Manifests from an upstream: GET, check, store verbatim (:class:`ManifestFetcher`).

Guarantees of :meth:`ManifestFetcher.fetch`:

- The upstream's answer is bounded by the upstream's connect + read timeout (504
  UpstreamTimeout after) and by ``max_bytes`` (``limits.max_manifest_bytes``; larger: 502).
- The bytes are checked against the digest asked for (by digest), else against the digest
  the upstream announced when it uses the same algorithm; a mismatch is 502 UNAVAILABLE and
  nothing is stored.
- The media type is the upstream's ``Content-Type`` unless that is unspecific
  (``application/json``, ``text/plain``, none), then the body's ``mediaType``.
- What is returned has been stored as one record (bytes + media type) in the
  :class:`~edge.manifeststore.ManifestStore` first.

Upstream refusals pass on as the client's OCI errors (ManifestUnknown, Unauthorized,
TooManyRequests...).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from edge.manifeststore import ManifestRecord, ManifestStore
from edge.timeouts import bounded, deadline
from regcore import errors
from regcore import mediatypes as mt
from regcore.digest import Digest
from regcore.manifest import parse_manifest

if TYPE_CHECKING:
    from edge.routing import Route
    from edge.upstreamclient import UpstreamClient

__all__ = ["ManifestFetcher", "media_type_of"]


class ManifestFetcher:
    """Fetches, checks and stores upstream manifests (see the module docstring)."""

    def __init__(self, store: ManifestStore, *, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes

    async def fetch(
        self,
        route: Route,
        ref: str,
        accept: tuple[str, ...],
        client: UpstreamClient,
        *,
        expect: Digest | None,
    ) -> ManifestRecord:
        """GET ``route``'s ``ref`` upstream asking for ``accept``, check, store, return it.

        Raises UpstreamUnavailable (too large, wrong digest), UpstreamTimeout and the
        upstream's mapped errors.
        """
        fetched = await bounded(
            client.get_manifest(route.name, ref, accept), deadline(route.upstream)
        )
        body: bytes = fetched.body
        if len(body) > self.max_bytes:
            raise errors.UpstreamUnavailable(
                {"size": len(body)}, message="upstream manifest exceeds the size limit"
            )
        announced = Digest.parse(str(fetched.digest)) if fetched.digest else None
        algorithm = (expect or announced or Digest("sha256", "")).algorithm
        actual = Digest.of(body, algorithm)
        if (expect is not None and actual != expect) or (
            announced is not None and announced.algorithm == algorithm and announced != actual
        ):
            raise errors.UpstreamUnavailable(
                {"expected": str(expect or announced), "actual": str(actual)},
                message="upstream manifest does not match its digest",
            )
        record = ManifestRecord(str(actual), media_type_of(fetched.media_type, body), body)
        await self.store.put(record)
        return record


def media_type_of(content_type: str | None, body: bytes) -> str:
    """A manifest's media type: the declared one unless unspecific, else the body's own."""
    declared = mt.normalize(content_type)
    if declared and declared not in mt.UNSPECIFIED_TYPES:
        return declared
    with contextlib.suppress(errors.RegistryError):
        return parse_manifest(body, None).media_type
    return declared or mt.OCTET_STREAM
