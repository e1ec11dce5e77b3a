"""Manifests through the edge: GET/HEAD ``/v2/<name>/manifests/<ref>``, tags list, referrers.

By digest: served from memory (:class:`ManifestMemory`, an LRU of bytes + media type bounded
by bytes, 32 MiB by default), else from the local cache (bytes stored verbatim in the
:class:`BlobCache` by digest, media type in :class:`ManifestTypes`; a disk hit is remembered in
memory), else fetched from upstream with the client's ``Accept`` forwarded, verified against
the digest, stored, served. Immutable: a cached manifest is served whatever the upstream says
(PROTOCOL.md 12), so memory entries need no invalidation, only eviction. A memory hit does
not touch disk, threads or sqlite (nor the blob cache's recency of that file). Access checks
for private upstreams happen in the handler before any of this, for every request.

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

Tags list and referrers are passed through to the upstream (nothing cached).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web
from prometheus_client import Counter, Gauge

from edge.app import EDGE
from edge.manifeststore import DEFAULT_MEMORY_BYTES, ManifestMemory, ManifestTypes
from edge.metrics import NAMESPACE
from edge.routing import Route, Router, ns_of
from edge.tagcache import TagCache, TagEntry
from regcore import errors
from regcore import mediatypes as mt
from regcore.client.status import Kind, error_for
from regcore.digest import Digest
from regcore.manifest import parse_manifest
from regcore.reference import Tag, parse_reference

if TYPE_CHECKING:
    from edge.app import Edge
    from edge.cache import BlobCache
    from edge.metrics import EdgeMetrics

log = logging.getLogger("quayside.edge.manifests")
_T = TypeVar("_T")
MEMO_ENTRIES = 256  # per memo of pure per-request computations (Accept, route); cleared when full
FULL_ACCEPT: tuple[str, ...] = mt.DEFAULT_ACCEPT
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
        cache: BlobCache,
        types: ManifestTypes,
        tags: TagCache,
        metrics: EdgeMetrics,
        revalidate_timeout: float,
        max_bytes: int,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> None:
        self.cache = cache
        self.types = types
        self.tags = tags
        self.metrics = metrics
        self.revalidate_timeout = revalidate_timeout
        self.max_bytes = max_bytes
        self.memory = ManifestMemory(memory_bytes)
        self._flights: dict[tuple[Any, ...], asyncio.Task[Any]] = {}
        self.reads = Counter(
            "manifest_reads",
            "Manifest bodies served from the cache, by where they were read (memory or disk)",
            ["source"],
            namespace=NAMESPACE,
            registry=metrics.registry,
        )
        self._memory_reads = self.reads.labels("memory")
        self._disk_reads = self.reads.labels("disk")
        gauge = Gauge(
            "manifest_memory_bytes",
            "Bytes of manifests held in memory",
            namespace=NAMESPACE,
            registry=metrics.registry,
        )
        gauge.set_function(lambda: self.memory.bytes_used)
        self._manifest_hits = metrics.cache_hits.labels("manifest")
        self._tag_hits = metrics.tag_cache.labels("hit")
        self.bytes_from_cache = metrics.bytes_served.labels("cache")
        # Memos of pure functions of request headers/paths (bounded; see _memo).
        self._accept_memo: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._forward_memo: dict[tuple[str, ...], tuple[tuple[str, ...], bool]] = {}
        self._acceptable_memo: dict[tuple[str, tuple[str, ...]], bool] = {}
        self._route_memo: dict[tuple[str, str | None], Route] = {}

    # -- per-request computations, memoised ------------------------------------------------
    def parse_accept(self, values: list[str]) -> tuple[str, ...]:
        """:func:`regcore.mediatypes.parse_accept` of the raw ``Accept`` values, as a tuple."""
        key = tuple(values)
        parsed = self._accept_memo.get(key)
        if parsed is None:
            parsed = _memo(self._accept_memo, key, tuple(mt.parse_accept(key)))
        return parsed

    def route(self, router: Router, name: str, ns: str | None) -> Route:
        """``router.route(name, ns)`` (the router is immutable); raises what it raises."""
        route = self._route_memo.get((name, ns))
        if route is None:
            route = _memo(self._route_memo, (name, ns), router.route(name, ns))
        return route

    def acceptable(self, media_type: str, accepted: Sequence[str]) -> bool:
        """:func:`regcore.mediatypes.acceptable`."""
        key = (media_type, tuple(accepted))
        ok = self._acceptable_memo.get(key)
        if ok is None:
            ok = _memo(self._acceptable_memo, key, mt.acceptable(media_type, key[1]))
        return ok

    def require_acceptable(self, media_type: str, accepted: Sequence[str]) -> None:
        """:func:`regcore.mediatypes.require_acceptable`: raises ManifestUnknown when not."""
        if not self.acceptable(media_type, accepted):
            mt.require_acceptable(media_type, accepted)

    def _forward(self, accepted: Sequence[str]) -> tuple[tuple[str, ...], bool]:
        """(types to ask upstream for, whether the answer may be recorded for the tag)."""
        key = tuple(accepted)
        item = self._forward_memo.get(key)
        if item is None:
            forwarded = forward_accept(list(key))
            item = _memo(self._forward_memo, key, (forwarded, set(forwarded) >= set(FULL_ACCEPT)))
        return item

    async def close(self) -> None:
        for task in list(self._flights.values()):
            task.cancel()
        await asyncio.gather(*self._flights.values(), return_exceptions=True)

    # -- by digest ------------------------------------------------------------------------
    async def local(self, digest: str, *, need_body: bool) -> Served | None:
        """The cached manifest (memory first, then disk), or ``None``. Refreshes its recency."""
        item = self.memory.get(digest)
        if item is not None:
            body, media_type = item
            if need_body:
                self._memory_reads.inc()
            return Served(digest, media_type, len(body), body if need_body else None)
        media_type = await self.types.get(digest)
        blob = self.cache.lookup(Digest.parse(digest)) if media_type is not None else None
        if blob is None or media_type is None:
            return None
        if not need_body:
            return Served(digest, media_type, blob.size)
        try:
            body = await asyncio.to_thread(blob.path.read_bytes)
        except FileNotFoundError:  # evicted between lookup and read
            return None
        self._disk_reads.inc()
        self.memory.put(digest, body, media_type)
        return Served(digest, media_type, blob.size, body)

    async def by_digest(
        self, route: Route, digest: Digest, accepted: Sequence[str], *, need_body: bool, client: Any
    ) -> Served:
        served = await self.local(str(digest), need_body=need_body)
        if served is not None:
            self._manifest_hits.inc()
            return served
        self.metrics.cache_misses.labels("manifest").inc()
        upstream = route.upstream
        forwarded, _ = self._forward(accepted)
        if not need_body:
            head = await self._bounded(
                _deadline(upstream), client.head_manifest(route.name, str(digest), forwarded)
            )
            return Served(str(digest), head.media_type, head.size)
        key = ("get", upstream.name, route.name, str(digest), forwarded)
        return await self._single(
            key, lambda: self._fetch(route, str(digest), forwarded, client, expect=digest)
        )

    # -- by tag ---------------------------------------------------------------------------
    async def by_tag(
        self, route: Route, tag: str, accepted: Sequence[str], *, need_body: bool, client: Any
    ) -> Served:
        u = route.upstream
        forwarded, recordable = self._forward(accepted)
        entry = await self.tags.get(u.name, route.name, tag)
        if entry is not None and self.acceptable(entry.media_type, accepted):
            if self.tags.fresh(entry):
                self._tag_hits.inc()
                return await self._serve_entry(route, entry, accepted, need_body, client)
            return await self._revalidate(route, tag, entry, accepted, need_body, client)
        self.metrics.tag_cache.labels("miss").inc()
        if not need_body:
            head = await self._bounded(
                _deadline(u), client.head_manifest(route.name, tag, forwarded)
            )
            if recordable:
                await self.tags.put(
                    u.name,
                    route.name,
                    tag,
                    self.tags.entry(head.digest, head.media_type, head.size),
                )
            return Served(head.digest, head.media_type, head.size)
        key = ("get", u.name, route.name, tag, forwarded)
        served = await self._single(
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
        client: Any,
    ) -> Served:
        u = route.upstream
        key = ("head", u.name, route.name, tag)
        try:
            head = await self._single(
                key,
                lambda: self._bounded(
                    self.revalidate_timeout, client.head_manifest(route.name, tag, FULL_ACCEPT)
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
        self, route: Route, entry: TagEntry, accepted: Sequence[str], need_body: bool, client: Any
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

    # -- upstream ---------------------------------------------------------------------------
    async def _fetch(
        self, route: Route, ref: str, accept: tuple[str, ...], client: Any, *, expect: Digest | None
    ) -> Served:
        """GET upstream, verify, store verbatim. Raises DigestInvalid-like 502 on mismatch."""
        fetched = await self._bounded(
            _deadline(route.upstream), client.get_manifest(route.name, ref, accept)
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
        media_type = _media_type(fetched.media_type, body)
        await self.cache.put_bytes(body, actual)
        await self.types.put(str(actual), media_type)
        self.memory.put(str(actual), body, media_type)
        return Served(str(actual), media_type, len(body), body)

    async def _bounded(self, timeout: float, coro: Awaitable[_T]) -> _T:
        try:
            async with asyncio.timeout(timeout):
                return await coro
        except TimeoutError:
            raise errors.UpstreamTimeout({"timeout_s": timeout}) from None

    async def _single(self, key: tuple[Any, ...], factory: Callable[[], Awaitable[_T]]) -> _T:
        """One upstream operation per key at a time; every caller gets its result."""
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(factory())
            self._flights[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
        return await asyncio.shield(task)

    def _forget(self, key: tuple[Any, ...], task: asyncio.Task[Any]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: waiters that left must not leave it unobserved


def _memo(memo: dict[Any, _T], key: Any, value: _T) -> _T:
    """Store ``value`` under ``key`` (emptying the memo first when it is full); returns it."""
    if len(memo) >= MEMO_ENTRIES:
        memo.clear()
    memo[key] = value
    return value


def forward_accept(accepted: list[str]) -> tuple[str, ...]:
    """The manifest types to ask upstream for on behalf of a client (see
    :func:`regcore.mediatypes.upstream_accept`)."""
    return tuple(t.strip() for t in mt.upstream_accept(accepted).split(",") if t.strip())


def _deadline(upstream: Any) -> float:
    return float(upstream.connect_timeout) + float(upstream.read_timeout)


def _media_type(content_type: str | None, body: bytes) -> str:
    declared = mt.normalize(content_type)
    if declared and declared not in mt.UNSPECIFIED_TYPES:
        return declared
    with contextlib.suppress(errors.RegistryError):
        return parse_manifest(body, None).media_type
    return declared or mt.OCTET_STREAM


# -- handlers --------------------------------------------------------------------------------
async def get_manifest(request: web.Request) -> web.StreamResponse:
    """GET/HEAD ``/v2/<name>/manifests/<reference>``."""
    edge: Edge = request.app[EDGE]
    manifests = edge.manifests
    name, ns = request.match_info["name"], ns_of(request.query)
    route = manifests.route(edge.router, name, ns) if manifests else edge.router.route(name, ns)
    try:
        ref = parse_reference(request.match_info["reference"])
    except errors.TagInvalid as exc:
        raise errors.ManifestUnknown(exc.detail, message="invalid tag") from None
    need_body = request.method != "HEAD"
    service = edge.require(manifests)
    accepted = service.parse_accept(request.headers.getall("Accept", []))
    # The caller's access (private upstreams) is checked here, before anything is served.
    client = await edge.client_for(request, route, "manifest", str(ref))
    if isinstance(ref, Tag):
        served = await service.by_tag(route, ref.name, accepted, need_body=need_body, client=client)
    else:
        served = await service.by_digest(route, ref, accepted, need_body=need_body, client=client)
    service.require_acceptable(served.media_type, accepted)
    headers = {
        "Docker-Content-Digest": served.digest,
        "ETag": f'"{served.digest}"',
        "Content-Type": served.media_type,
        **route.headers,
    }
    if not need_body:
        headers["Content-Length"] = str(served.size)
        return web.Response(status=200, headers=headers)
    assert served.body is not None
    service.bytes_from_cache.inc(len(served.body))
    return web.Response(status=200, body=served.body, headers=headers)


async def tags_list(request: web.Request) -> web.StreamResponse:
    """GET ``/v2/<name>/tags/list`` passed through to the upstream (``n``/``last`` kept)."""
    edge: Edge = request.app[EDGE]
    route = edge.router.route(request.match_info["name"], ns_of(request.query))
    client = await edge.client_for(request, route, "tags", "list")
    query = {k: v for k, v in request.query.items() if k in ("n", "last")}
    return await _passthrough(request, route, client, f"/v2/{route.name}/tags/list", query, "tags")


async def referrers(request: web.Request) -> web.StreamResponse:
    """GET ``/v2/<name>/referrers/<digest>`` passed through (``artifactType`` kept)."""
    edge: Edge = request.app[EDGE]
    route = edge.router.route(request.match_info["name"], ns_of(request.query))
    digest = Digest.parse(request.match_info["digest"])
    client = await edge.client_for(request, route, "manifest", str(digest))
    query = {k: v for k, v in request.query.items() if k == "artifactType"}
    return await _passthrough(
        request, route, client, f"/v2/{route.name}/referrers/{digest}", query, "referrers"
    )


async def _passthrough(
    request: web.Request, route: Route, client: Any, path: str, query: dict[str, str], kind: Kind
) -> web.Response:
    """GET ``path`` upstream and relay status 200 answers (body, Content-Type, a ``Link``
    rewritten to this edge's path); other answers become the mapped OCI error."""
    try:
        async with asyncio.timeout(_deadline(route.upstream)):
            resp = await client.request("GET", path, params=query or None)
            async with resp:
                if resp.status == 200:
                    body = await resp.read()
                else:  # a refusal's envelope names its OCI code, relayed (bounded read)
                    body = await resp.content.read(64 * 1024)
                status, headers, url = resp.status, resp.headers.copy(), resp.url
    except TimeoutError:
        raise errors.UpstreamTimeout({"path": path}) from None
    if status != 200:
        raise error_for(status, kind, method="GET", url=url, headers=headers, body=body)
    out = {"Content-Type": headers.get("Content-Type", "application/json"), **route.headers}
    link = headers.get("Link")
    if link and "?" in link:
        params = link.split("?", 1)[1].split(">", 1)[0]
        if route.ns is not None:
            params += "&" + urlencode({"ns": route.ns})
        out["Link"] = f'<{request.path}?{params}>; rel="next"'
    return web.Response(status=200, body=body, headers=out)
