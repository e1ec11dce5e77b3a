"""The referrers API at the edge, answered from cache (:class:`ReferrersService`).

``GET /v2/<name>/referrers/<digest>`` is fetched from the upstream once per (upstream,
repository, digest) and kept like a tag (the list changes when artifacts are attached):

- an entry younger than ``tags.ttl`` answers without an upstream request; ``?artifactType=``
  is applied here to the cached, unfiltered list (``OCI-Filters-Applied: artifactType``), so
  every filter shares one upstream fetch;
- an older entry is fetched again; when the upstream is down, hung, 5xx or 429 the last
  known list is served (counted in ``stale_serves``), as for tags;
- an upstream without the referrers API (404) is remembered the same way: the client gets
  the mapped 404 again without an upstream request until the entry ages out;
- a paginated upstream answer (``Link: <…>; rel="next"``) is followed up to
  :data:`MAX_PAGES` pages and cached whole.

Entries are bounded (:data:`MAX_ENTRIES`, least recently used out). One upstream fetch per key
runs at a time (:class:`edge.singleflight.SingleFlight`). The referrer manifests themselves go
through the manifest store when fetched by digest, like any manifest. Not thread-safe.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.singleflight import SingleFlight
from edge.timeouts import deadline
from regcore import errors
from regcore import mediatypes as mt
from regcore.client.status import error_for

if TYPE_CHECKING:
    from edge.metrics import EdgeMetrics
    from edge.routing import Route
    from edge.upstreamclient import UpstreamClient

__all__ = ["MAX_ENTRIES", "MAX_PAGES", "ReferrersService", "referrers_index"]

log = logging.getLogger("quayside.edge.referrers")
MAX_ENTRIES = 10_000
MAX_PAGES = 20
MAX_PAGE_BYTES = 4 * 1024 * 1024
_STALE_ERRORS = (
    errors.UpstreamUnavailable,
    errors.UpstreamTimeout,
    errors.TooManyRequests,
    errors.Unavailable,
)


@dataclass(frozen=True, slots=True)
class _Entry:
    """The upstream's list (``None``: no referrers API, ``missing`` is its 404) and when."""

    descriptors: tuple[dict[str, Any], ...] | None
    fetched_at: float
    missing: errors.RegistryError | None = None


def referrers_index(descriptors: list[dict[str, Any]]) -> bytes:
    """The OCI index body of a referrers answer."""
    return json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
    ).encode()


class ReferrersService:
    """Cached referrers lists (see the module docstring). One per application."""

    def __init__(self, *, ttl: float, clock: Callable[[], float], metrics: EdgeMetrics) -> None:
        self.ttl = ttl
        self.clock = clock
        self.metrics = metrics
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self._fetches: SingleFlight[tuple[str, str, str], _Entry] = SingleFlight()

    async def close(self) -> None:
        """Cancel the upstream fetches still running."""
        await self._fetches.drain(0)

    async def descriptors(
        self, route: Route, digest: str, client: UpstreamClient
    ) -> list[dict[str, Any]] | None:
        """The referrers of ``digest`` (unfiltered), or ``None`` when the upstream has no
        referrers API. Raises the upstream's errors when nothing is cached."""
        entry = await self._entry(route, digest, client)
        return None if entry.descriptors is None else list(entry.descriptors)

    async def answer(
        self, route: Route, digest: str, artifact_type: str | None, client: UpstreamClient
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the client's answer; raises the mapped 404 when the
        upstream has no referrers API."""
        entry = await self._entry(route, digest, client)
        if entry.descriptors is None:
            missing = entry.missing or errors.NameUnknown({"digest": digest})
            raise type(missing)(missing.detail, message=missing.msg, from_upstream=True)
        found = list(entry.descriptors)
        headers = {"Content-Type": mt.OCI_INDEX}
        if artifact_type:
            found = [d for d in found if d.get("artifactType") == artifact_type]
            headers["OCI-Filters-Applied"] = "artifactType"
        return referrers_index(found), headers

    async def _entry(self, route: Route, digest: str, client: UpstreamClient) -> _Entry:
        key = (route.upstream.name, route.name, digest)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            if self.clock() - entry.fetched_at < self.ttl:
                self.metrics.cache_hits.labels("referrers").inc()
                return entry
        self.metrics.cache_misses.labels("referrers").inc()
        try:
            fresh = await self._fetches.run(key, lambda: self._fetch(route, digest, client))
        except _STALE_ERRORS as exc:
            if entry is None:
                raise
            self.metrics.stale_serves.labels(route.upstream.name).inc()
            log.warning(
                "upstream failed listing referrers; serving the last known list",
                extra={"upstream": route.upstream.name, "repo": route.name, "error": exc.code},
            )
            return entry
        self._entries[key] = fresh
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)
        return fresh

    async def _fetch(self, route: Route, digest: str, client: UpstreamClient) -> _Entry:
        path = f"/v2/{route.name}/referrers/{digest}"
        params: dict[str, str] | None = None
        found: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            status, body, headers, url = await self._get(route, client, path, params)
            if status == 404:
                err = error_for(404, "referrers", method="GET", url=url, headers=headers, body=body)
                return _Entry(None, self.clock(), err)
            if status != 200:
                raise error_for(
                    status, "referrers", method="GET", url=url, headers=headers, body=body
                )
            try:
                doc = json.loads(body)
                page = doc.get("manifests") or []
            except (ValueError, AttributeError):
                raise errors.UpstreamUnavailable(
                    {"path": path}, message="upstream referrers answer is not an index"
                ) from None
            found.extend(
                d for d in page if isinstance(d, dict) and isinstance(d.get("digest"), str)
            )
            link = headers.get("Link")
            if not link or 'rel="next"' not in link or "?" not in link:
                break
            query = link.split("?", 1)[1].split(">", 1)[0]
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        return _Entry(tuple(found), self.clock())

    async def _get(
        self, route: Route, client: UpstreamClient, path: str, params: dict[str, str] | None
    ) -> tuple[int, bytes, Any, Any]:
        try:
            async with asyncio.timeout(deadline(route.upstream)):
                resp = await client.request("GET", path, params=params)
                async with resp:
                    limit = MAX_PAGE_BYTES if resp.status == 200 else 64 * 1024
                    body = await resp.content.read(limit + 1)
                    if len(body) > limit:
                        raise errors.UpstreamUnavailable(
                            {"path": path}, message="upstream referrers answer is too large"
                        )
                    return resp.status, body, resp.headers.copy(), resp.url
        except TimeoutError:
            raise errors.UpstreamTimeout({"path": path}) from None
