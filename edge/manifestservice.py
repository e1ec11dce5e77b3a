"""Manifest resolution at the edge (:class:`ManifestService`): the tag policy, by tag, by digest.

By digest: served from the edge's manifest store (:class:`edge.manifeststore.ManifestStore`:
one record per digest holding the bytes verbatim with their media type, the hottest in
memory, all on disk; a disk hit is remembered in memory), else fetched from upstream,
verified against the digest, stored, served. Immutable: a stored manifest is served whatever
the upstream says (PROTOCOL.md 12), so records need no invalidation, only eviction. A memory
hit does not touch disk, threads or sqlite. Access checks for private upstreams happen in the
handler before any of this, for every request.

By tag (PROTOCOL.md 4, 7, 12), with the :class:`~edge.tagcache.TagCache`:

- entry within ``tags.ttl`` -> the cached digest's manifest, no upstream request at all;
- entry older -> upstream HEAD bounded by ``tags.revalidate_timeout``: same digest -> TTL
  refreshed; new digest -> the new manifest is fetched by digest (a client HEAD needs no GET)
  and the entry moves once it is had (if the upstream fails that fetch, the last known digest
  is served); upstream down, hung, 5xx or 429 -> the last known digest is served and counted
  in ``stale_serves``; 404 -> the entry is dropped and 404 MANIFEST_UNKNOWN returned;
- no entry -> upstream GET (HEAD for a client HEAD); errors pass on: 429 TOOMANYREQUESTS,
  502/504 UNAVAILABLE.

Negotiation (:class:`edge.negotiation.Negotiation`): every upstream request asks for every
manifest type (:data:`~edge.negotiation.FULL_ACCEPT`), whatever the client sent, so a stored
record and a tag entry are what the manifest and the tag *are*, recorded for every client.
Each client's ``Accept`` is then negotiated against the stored media type, as registry:2 does:
an OCI manifest or index it did not list is 404 MANIFEST_UNKNOWN; a Docker manifest list asked
for by tag by a client that takes no lists is answered with its linux/amd64 child (404 when
there is none, 400 MANIFEST_INVALID when the child is schema 2 and not listed). So a client
naming only some types is served from the cache, stale-on-failure included, like any other.

Bounds: everything one client request waits for upstream (a miss, a revalidation and the
fetch of a changed digest, a list and its child) shares one budget of the upstream's connect +
read timeout (:func:`edge.timeouts.deadline`) from the request's start; past it the request
gets 504 UNAVAILABLE (or the last known digest, when revalidating). A shared upstream
operation left by a caller at its bound keeps running for the others, bounded by its own.

Upstream fetches are checked and stored by :class:`edge.manifestfetch.ManifestFetcher`. One
upstream GET per (upstream, repository, reference) and one HEAD per tag run at a time, shared by every request that needs them
(:class:`edge.singleflight.SingleFlight`); :meth:`ManifestService.close` cancels those left.
"""

from __future__ import annotations

import logging
import time
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


class _NotCached(Exception):
    """A record needed to answer from local records alone is not stored here."""


class _Budget:
    """Seconds left of one client request's upstream budget, on the monotonic clock."""

    __slots__ = ("end",)

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


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
        """The manifest ``digest`` negotiated for ``accepted`` (never narrowed by digest).
        Raises ManifestUnknown (unknown, or a type the client did not list), UpstreamTimeout,
        UpstreamUnavailable and the upstream's mapped refusals."""
        budget = _Budget(deadline(route.upstream))
        served = await self._digest(route, str(digest), need_body, client, budget)
        self.negotiation.decide(served.media_type, accepted, by_tag=False)
        return served

    async def _digest(
        self,
        route: Route,
        digest: str,
        need_body: bool,
        client: UpstreamClient | None,
        budget: _Budget,
    ) -> Served:
        """The stored manifest, else (with a client) the upstream's: HEAD for headers only,
        GET (checked, stored, one per digest at a time) for a body. No negotiation. Without
        a client, raises _NotCached when the record is not stored."""
        served = await self.local(digest, need_body=need_body)
        if served is not None:
            self._manifest_hits.inc()
            return served
        if client is None:
            raise _NotCached(digest)
        self.metrics.cache_misses.labels("manifest").inc()
        if not need_body:
            head = await bounded(
                client.head_manifest(route.name, digest, FULL_ACCEPT), budget.left()
            )
            return Served(digest, head.media_type, head.size)
        key = (route.upstream.name, route.name, digest)
        expect = Digest.parse(digest)
        return await bounded(
            self._gets.run(key, lambda: self._fetch(route, digest, client, expect=expect)),
            budget.left(),
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
        """The manifest ``tag`` names, negotiated for ``accepted`` (see the module docstring).
        Raises ManifestUnknown, ManifestInvalid (a list's schema 2 child not listed),
        UpstreamTimeout, UpstreamUnavailable and the upstream's mapped refusals."""
        u = route.upstream
        budget = _Budget(deadline(u))
        entry = await self.tags.get(u.name, route.name, tag)
        if entry is None:
            self.metrics.tag_cache.labels("miss").inc()
            entry, fetched = await self._resolve(route, tag, need_body, client, budget)
            return await self._answer(route, entry, accepted, need_body, client, budget, fetched)
        if self.tags.fresh(entry):
            self._tag_hits.inc()
            return await self._answer(route, entry, accepted, need_body, client, budget)
        return await self._revalidate(route, tag, entry, accepted, need_body, client, budget)

    async def _resolve(
        self, route: Route, tag: str, need_body: bool, client: UpstreamClient, budget: _Budget
    ) -> tuple[TagEntry, Served | None]:
        """A tag unknown here, asked upstream (HEAD for a client HEAD, else GET, shared by
        every caller) and recorded; returns the entry and the fetched manifest (GET)."""
        u = route.upstream
        fetched: Served | None = None
        if need_body:
            fetched = await bounded(
                self._gets.run(
                    (u.name, route.name, tag),
                    lambda: self._fetch(route, tag, client, expect=None),
                ),
                budget.left(),
            )
            digest, media_type, size = fetched.digest, fetched.media_type, fetched.size
        else:
            head = await bounded(
                self._heads.run(
                    ("miss", u.name, route.name, tag),
                    lambda: bounded(
                        client.head_manifest(route.name, tag, FULL_ACCEPT), deadline(u)
                    ),
                ),
                budget.left(),
            )
            digest, media_type, size = head.digest, head.media_type, head.size
        entry = self.tags.entry(digest, media_type, size)
        await self.tags.put(u.name, route.name, tag, entry)
        return entry, fetched

    async def _revalidate(
        self,
        route: Route,
        tag: str,
        entry: TagEntry,
        accepted: Sequence[str],
        need_body: bool,
        client: UpstreamClient,
        budget: _Budget,
    ) -> Served:
        u = route.upstream
        key = (u.name, route.name, tag)
        try:
            head = await bounded(
                self._heads.run(
                    key,
                    lambda: bounded(
                        client.head_manifest(route.name, tag, FULL_ACCEPT),
                        self.revalidate_timeout,
                    ),
                ),
                budget.left(),
            )
        except errors.ManifestUnknown:
            self.metrics.tag_cache.labels("gone").inc()
            await self.tags.delete(u.name, route.name, tag)
            raise
        except _STALE_ERRORS as exc:
            self.metrics.tag_cache.labels("failed").inc()
            return await self._stale(route, tag, entry, accepted, need_body, budget, exc)
        fresh = self.tags.entry(head.digest, head.media_type, head.size)
        if head.digest == entry.digest:
            self.metrics.tag_cache.labels("revalidated").inc()
            await self.tags.put(u.name, route.name, tag, fresh)
            return await self._answer(route, fresh, accepted, need_body, client, budget)
        self.metrics.tag_cache.labels("changed").inc()
        try:
            served = await self._answer(route, fresh, accepted, need_body, client, budget)
        except _STALE_ERRORS as exc:  # the new manifest cannot be had: keep the last known one
            return await self._stale(route, tag, entry, accepted, need_body, budget, exc)
        except errors.RegistryError:
            await self.tags.put(u.name, route.name, tag, fresh)
            raise
        await self.tags.put(u.name, route.name, tag, fresh)
        return served

    async def _stale(
        self,
        route: Route,
        tag: str,
        entry: TagEntry,
        accepted: Sequence[str],
        need_body: bool,
        budget: _Budget,
        exc: errors.RegistryError,
    ) -> Served:
        """The last known manifest of ``tag`` from local records only, counted as a stale
        serve; ``exc`` (the upstream's failure) when the records needed are not here. A
        client's refusal (type not listed) is raised as it would be with the upstream up."""
        u = route.upstream
        try:
            served = await self._answer(route, entry, accepted, need_body, None, budget)
        except _NotCached:
            raise exc from None
        self.metrics.stale_serves.labels(u.name).inc()
        log.warning(
            "upstream failed revalidating a tag; serving the last known digest",
            extra={"upstream": u.name, "repo": route.name, "tag": tag, "error": exc.code},
        )
        return served

    # -- negotiation ----------------------------------------------------------------------
    async def _answer(
        self,
        route: Route,
        entry: TagEntry,
        accepted: Sequence[str],
        need_body: bool,
        client: UpstreamClient | None,
        budget: _Budget,
        fetched: Served | None = None,
    ) -> Served:
        """What a tag ``entry`` answers to a client that sent ``accepted``: the manifest it
        names (a HEAD from the entry alone; ``fetched`` when it was just fetched), or its
        linux/amd64 child. Without a client, local records only (_NotCached else)."""
        if self.negotiation.decide(entry.media_type, accepted, by_tag=True) == "serve":
            if fetched is not None and fetched.digest == entry.digest:
                return fetched
            if not need_body:
                return Served(entry.digest, entry.media_type, entry.size)
            return await self._digest(route, entry.digest, True, client, budget)
        listed = fetched
        if listed is None or listed.body is None or listed.digest != entry.digest:
            listed = await self._digest(route, entry.digest, True, client, budget)
        assert listed.body is not None
        child = self.negotiation.platform_child(listed.digest, listed.body)
        if child is None:
            raise errors.ManifestUnknown(
                {"digest": listed.digest}, message="manifest list has no linux/amd64 manifest"
            )
        served = await self._digest(route, child.digest, need_body, client, budget)
        self.negotiation.check_child(served.media_type, accepted)
        return served

    async def _fetch(
        self, route: Route, ref: str, client: UpstreamClient, *, expect: Digest | None
    ) -> Served:
        record = await self.fetcher.fetch(route, ref, FULL_ACCEPT, client, expect=expect)
        return Served(record.digest, record.media_type, len(record.body), record.body)
