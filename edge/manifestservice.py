"""Manifest resolution at the edge (:class:`ManifestService`): the tag policy, by tag, by digest.

By digest: served from the edge's manifest store (:class:`edge.manifeststore.ManifestStore`:
one record per digest holding the bytes verbatim with their media type, the hottest in
memory, all on disk; a disk hit is remembered in memory), else fetched from upstream with
the client's ``Accept`` forwarded, verified against the digest, stored, served. Immutable: a
stored manifest is served whatever the upstream says (PROTOCOL.md 12), so records need no
invalidation, only eviction. A memory hit does not touch disk, threads or sqlite. Access
checks for private upstreams happen in the handler before any of this, for every request.

By tag (PROTOCOL.md 4, 7, 12), with the :class:`~edge.tagcache.TagCache`:

- entry within ``tags.ttl`` -> the cached digest's manifest, no upstream request at all;
- entry older -> upstream HEAD bounded by ``tags.revalidate_timeout``: same digest -> TTL
  refreshed; new digest -> the new manifest is fetched by digest (a client HEAD needs no GET);
  upstream down, hung, 5xx or 429 -> the last known digest is served and counted in
  ``stale_serves``; 404 -> the entry is dropped and 404 MANIFEST_UNKNOWN returned;
- no entry -> upstream GET (HEAD for a client HEAD); errors pass on: 429 TOOMANYREQUESTS,
  502/504 UNAVAILABLE, bounded by the upstream's connect + read timeout.

Negotiation: tag entries are written only from answers to an ``Accept`` naming every type we
serve, so an entry is what the tag *is*; a client is never served a type it did not accept
(404 MANIFEST_UNKNOWN, as registry:2). A client naming only some types is forwarded as is
and its answer is not recorded for the tag (registry:2 may have converted it for that client).

Upstream fetches are checked and stored by :class:`edge.manifestfetch.ManifestFetcher`. One
upstream GET per (upstream, repository, reference, forwarded types) and one revalidating HEAD
per tag run at a time, shared by every request that needs them
(:class:`edge.singleflight.SingleFlight`); :meth:`ManifestService.close` cancels those left.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.manifestfetch import ManifestFetcher
from edge.manifeststore import ManifestStore
from edge.negotiation import FULL_ACCEPT, Negotiation
from edge.routing import Route
from edge.singleflight import SingleFlight
from edge.tagcache import TagCache, TagEntry
from edge.timeouts import bounded, deadline
from regcore import errors
from regcore.digest import Digest

if TYPE_CHECKING:
    from edge.metrics import EdgeMetrics
    from edge.upstreamclient import UpstreamClient
    from regcore.client import ManifestHead

log = logging.getLogger("quayside.edge.manifests")
_STALE_ERRORS = (
    errors.UpstreamUnavailable,
    errors.UpstreamTimeout,
    errors.TooManyRequests,
    errors.Unavailable,
)


@dataclass(frozen=True, slots=True)
class Served:
    """A manifest answer. ``body`` is ``None`` when only headers are needed (client HEAD)."""

    digest: str
    media_type: str
    size: int
    body: bytes | None = None


class ManifestService:
    """Cache-first manifest resolution (see the module docstring). One per app."""

    def __init__(
        self,
        *,
        store: ManifestStore,
        fetcher: ManifestFetcher,
        tags: TagCache,
        negotiation: Negotiation,
        metrics: EdgeMetrics,
        revalidate_timeout: float,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.tags = tags
        self.negotiation = negotiation
        self.metrics = metrics
        self.revalidate_timeout = revalidate_timeout
        self._gets: SingleFlight[tuple[str, ...], Served] = SingleFlight()
        self._heads: SingleFlight[tuple[str, ...], ManifestHead] = SingleFlight()
        self._memory_reads = metrics.manifest_reads.labels("memory")
        self._disk_reads = metrics.manifest_reads.labels("disk")
        self._manifest_hits = metrics.cache_hits.labels("manifest")
        self._tag_hits = metrics.tag_cache.labels("hit")

    async def close(self) -> None:
        """Cancel the upstream operations still running (their callers get the cancellation)."""
        await self._gets.drain(0)
        await self._heads.drain(0)

    # -- by digest ------------------------------------------------------------------------
    async def local(self, digest: str, *, need_body: bool) -> Served | None:
        """The stored manifest (memory first, then disk), or ``None``. Refreshes its recency;
        a body read from disk for a GET is kept in memory too."""
        found = await self.store.get(digest, remember=need_body)
        if found is None:
            return None
        record, source = found
        if not need_body:
            return Served(digest, record.media_type, len(record.body))
        (self._memory_reads if source == "memory" else self._disk_reads).inc()
        return Served(digest, record.media_type, len(record.body), record.body)

    async def by_digest(
        self,
        route: Route,
        digest: Digest,
        accepted: Sequence[str],
        *,
        need_body: bool,
        client: UpstreamClient,
    ) -> Served:
        served = await self.local(str(digest), need_body=need_body)
        if served is not None:
            self._manifest_hits.inc()
            return served
        self.metrics.cache_misses.labels("manifest").inc()
        upstream = route.upstream
        forwarded, _ = self.negotiation.forward(accepted)
        if not need_body:
            head = await bounded(
                client.head_manifest(route.name, str(digest), forwarded), deadline(upstream)
            )
            return Served(str(digest), head.media_type, head.size)
        key = (upstream.name, route.name, str(digest), *forwarded)
        return await self._gets.run(
            key, lambda: self._fetch(route, str(digest), forwarded, client, expect=digest)
        )

    # -- by tag ---------------------------------------------------------------------------
    async def by_tag(
        self,
        route: Route,
        tag: str,
        accepted: Sequence[str],
        *,
        need_body: bool,
        client: UpstreamClient,
    ) -> Served:
        u = route.upstream
        forwarded, recordable = self.negotiation.forward(accepted)
        entry = await self.tags.get(u.name, route.name, tag)
        if entry is not None and self.negotiation.acceptable(entry.media_type, accepted):
            if self.tags.fresh(entry):
                self._tag_hits.inc()
                return await self._serve_entry(route, entry, accepted, need_body, client)
            return await self._revalidate(route, tag, entry, accepted, need_body, client)
        self.metrics.tag_cache.labels("miss").inc()
        if not need_body:
            head = await bounded(client.head_manifest(route.name, tag, forwarded), deadline(u))
            if recordable:
                await self.tags.put(
                    u.name,
                    route.name,
                    tag,
                    self.tags.entry(head.digest, head.media_type, head.size),
                )
            return Served(head.digest, head.media_type, head.size)
        key = (u.name, route.name, tag, *forwarded)
        served = await self._gets.run(
            key, lambda: self._fetch(route, tag, forwarded, client, expect=None)
        )
        if recordable:
            await self.tags.put(
                u.name,
                route.name,
                tag,
                self.tags.entry(served.digest, served.media_type, served.size),
            )
        return served

    async def _revalidate(
        self,
        route: Route,
        tag: str,
        entry: TagEntry,
        accepted: Sequence[str],
        need_body: bool,
        client: UpstreamClient,
    ) -> Served:
        u = route.upstream
        key = (u.name, route.name, tag)
        try:
            head = await self._heads.run(
                key,
                lambda: bounded(
                    client.head_manifest(route.name, tag, FULL_ACCEPT), self.revalidate_timeout
                ),
            )
        except errors.ManifestUnknown:
            self.metrics.tag_cache.labels("gone").inc()
            await self.tags.delete(u.name, route.name, tag)
            raise
        except _STALE_ERRORS as exc:
            self.metrics.tag_cache.labels("failed").inc()
            try:
                served = await self._serve_entry(route, entry, accepted, need_body, None)
            except errors.RegistryError:
                raise exc from None
            self.metrics.stale_serves.labels(u.name).inc()
            log.warning(
                "upstream failed revalidating a tag; serving the last known digest",
                extra={"upstream": u.name, "repo": route.name, "tag": tag, "error": exc.code},
            )
            return served
        fresh = self.tags.entry(head.digest, head.media_type, head.size)
        await self.tags.put(u.name, route.name, tag, fresh)
        self.metrics.tag_cache.labels(
            "revalidated" if head.digest == entry.digest else "changed"
        ).inc()
        return await self._serve_entry(route, fresh, accepted, need_body, client)

    async def _serve_entry(
        self,
        route: Route,
        entry: TagEntry,
        accepted: Sequence[str],
        need_body: bool,
        client: UpstreamClient | None,
    ) -> Served:
        """The manifest an entry names: local bytes, else (with a client) fetched by digest.
        A HEAD is answered from the entry alone. Raises ManifestUnknown when neither works."""
        if not need_body:
            return Served(entry.digest, entry.media_type, entry.size)
        served = await self.local(entry.digest, need_body=True)
        if served is not None:
            self._manifest_hits.inc()
            return served
        if client is None:
            raise errors.ManifestUnknown(message="manifest not cached and upstream unavailable")
        return await self.by_digest(
            route, Digest.parse(entry.digest), accepted, need_body=True, client=client
        )

    async def _fetch(
        self,
        route: Route,
        ref: str,
        accept: tuple[str, ...],
        client: UpstreamClient,
        *,
        expect: Digest | None,
    ) -> Served:
        record = await self.fetcher.fetch(route, ref, accept, client, expect=expect)
        return Served(record.digest, record.media_type, len(record.body), record.body)
