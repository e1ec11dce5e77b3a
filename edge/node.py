"""One edge node: the composition root that builds every part in order and runs them.

``EdgeNode(config, *, cache=None, fills=None, clients=None, clock=time.monotonic,
registry=None)`` constructs, without I/O and in this order:

1. the metrics (:class:`edge.metrics.EdgeMetrics`, :class:`edge.fill.EdgeFillMetrics`) on
   ``registry`` (a fresh one by default) and the :class:`edge.routing.Router`;
2. the upstreams (:class:`edge.upstreams.Upstreams`; ``clients``, upstream name -> client,
   replace configured ones), the :class:`edge.upstreams.AccessChecker` over them (private
   upstreams) and the one authorization point :class:`edge.auth.EdgeAccess` (token-mode
   upstreams' keys, the edge's own htpasswd users, that checker);
3. the blob cache (``cache.dir``; its bound is ``cache.size`` less the manifests' share), the
   region lock (``redis.url``, only when the node builds its own fill manager), the region's
   :class:`edge.peers.PeerToken` and the :class:`edge.fill.FillManager`, whose peer sources
   (:class:`edge.peers.PeerSources`) use the upstream session and that token;
4. the tag cache (memory, or Redis shared by the region), the manifest store
   (``<cache.dir>/manifests``, :func:`edge.manifeststore.disk_share` of ``cache.size``), its
   fetcher, the content negotiation and the :class:`edge.manifestservice.ManifestService`;
5. the referrers cache (:class:`edge.referrers.ReferrersService`, ``tags.ttl``) and the
   signature / scan policies (:class:`edge.policy.EdgePolicy`, ``policies``; ``policy`` is
   None when no policy is active);
6. the handlers: :class:`edge.blobs.BlobHandler`, :class:`edge.manifests.ManifestHandlers`.

A ``cache`` or ``fills`` passed in is used as is and opened and closed by the caller.

:meth:`EdgeNode.start` opens, in this order: the upstream session and clients (credential
files are read here), the cache (crash recovery, index rebuild), the region's peer token,
the fill manager, the manifest store. :meth:`EdgeNode.stop` closes in reverse: running
manifest fetches are cancelled, the store and the tag cache closed, running fills drained
(finish and commit, up to the manager's drain timeout), then the region lock, the cache and
the upstreams. A start that fails closes what it had opened and raises. :meth:`lifespan` is
the same pair as an aiohttp ``cleanup_ctx``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from edge.authsetup import build_access
from edge.authtls import peer_client_context
from edge.blobs import BlobHandler
from edge.cache import BlobCache
from edge.config import EdgeConfig
from edge.fill import EdgeFillMetrics, FillManager
from edge.manifestfetch import ManifestFetcher
from edge.manifests import ManifestHandlers
from edge.manifestservice import ManifestService
from edge.manifeststore import DEFAULT_MEMORY_BYTES, ManifestStore, disk_share
from edge.metrics import EdgeMetrics
from edge.negotiation import Negotiation
from edge.peers import PeerSources, PeerToken
from edge.referrers import ReferrersService
from edge.regionlock import RegionLock
from edge.routing import Router
from edge.tagcache import TagCache
from edge.upstreams import AccessChecker, Upstreams

if TYPE_CHECKING:
    from aiohttp import web

    from edge.auth import EdgeAccess
    from edge.policy import EdgePolicy
    from edge.upstreamclient import UpstreamClient

log = logging.getLogger("quayside.edge")
Clock = Callable[[], float]
PRIVATE_CHECK_TTL = 30.0

__all__ = ["EdgeNode"]


class EdgeNode:
    """Every part of one edge node, built in order, started and stopped together.

    The parts are public attributes for the application's routes (and tests): ``config``,
    ``registry``, ``metrics``, ``fill_metrics``, ``router``, ``upstreams``,
    ``private_access``, ``access``,
    ``cache``, ``region``, ``peer_token``, ``fills``, ``tags``, ``manifest_store``,
    ``manifests``, ``negotiation``, ``referrers``, ``policy``, ``blobs``, ``manifest_handlers``. Use from one event loop.
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        cache: BlobCache | None = None,
        fills: FillManager | None = None,
        clients: Mapping[str, UpstreamClient] | None = None,
        clock: Clock = time.monotonic,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = EdgeMetrics(self.registry)
        self.fill_metrics = EdgeFillMetrics(self.registry)
        self.router = Router.from_config(config)

        self.upstreams = Upstreams(
            config.upstreams,
            trace_configs=[self.metrics.trace_config(config.upstreams)],
            clients=clients,
        )
        self.private_access = AccessChecker(
            self.upstreams, clock=clock, ttl=PRIVATE_CHECK_TTL, on_result=self.metrics.auth_checked
        )
        self.access: EdgeAccess = build_access(
            config, self.router, self.upstreams, self.private_access
        )

        manifest_bytes = disk_share(config.cache.size)
        self._own_cache = cache is None
        if cache is None:
            cache = BlobCache(Path(config.cache.dir), config.cache.size - manifest_bytes)
        self.cache = cache
        self._own_fills = fills is None
        self.region: RegionLock | None = None
        if fills is None and config.redis.url is not None:
            self.region = RegionLock(config.redis.url, ttl=config.redis.lock_ttl)
        self.peer_token = PeerToken(self.region, config.redis.peer_token)
        # mTLS/private CA towards other nodes' peer endpoints (tls.peer), on a session of its own
        self.peer_sources = PeerSources(
            self.upstreams, self.peer_token, ssl_context=peer_client_context(config.tls)
        )
        if fills is None:
            fills = FillManager(
                cache,
                region=self.region,
                advertise_url=config.advertise,
                peer_source=self.peer_sources,
                metrics=self.fill_metrics,
                direct_io=config.cache.direct_io,
            )
        self.fills = fills

        self.tags = self._tag_cache(clock)
        self.manifest_store = ManifestStore(
            Path(self.cache.directory) / "manifests",
            disk_bytes=manifest_bytes,
            memory_bytes=DEFAULT_MEMORY_BYTES,
        )
        self.metrics.watch_manifest_memory(self.manifest_store.memory_bytes_used)
        self.negotiation = Negotiation()
        self.manifests = ManifestService(
            store=self.manifest_store,
            fetcher=ManifestFetcher(
                self.manifest_store, max_bytes=config.limits.max_manifest_bytes
            ),
            tags=self.tags,
            negotiation=self.negotiation,
            metrics=self.metrics,
            revalidate_timeout=config.tags.revalidate_timeout,
        )

        self.blobs = BlobHandler(
            router=self.router,
            access=self.access,
            cache=self.cache,
            fills=self.fills,
            metrics=self.metrics,
        )
        self.referrers = ReferrersService(ttl=config.tags.ttl, clock=clock, metrics=self.metrics)
        self.policy = self._policy(clock)
        self.manifest_handlers = ManifestHandlers(
            router=self.router,
            access=self.access,
            manifests=self.manifests,
            negotiation=self.negotiation,
            metrics=self.metrics,
            policy=self.policy,
            referrers_cache=self.referrers,
        )
        self._running: contextlib.AsyncExitStack | None = None

    def _policy(self, clock: Clock) -> EdgePolicy | None:
        """The signature / scan gate, or None when no policy is active (then the policy
        engine, cryptography among its imports, is never loaded)."""
        if not self.config.policies.active:
            return None
        from edge.policy import EdgePolicy

        return EdgePolicy(
            self.config.policies,
            tag_ttl=self.config.tags.ttl,
            clock=clock,
            registry=self.registry,
            manifests=self.manifests,
            referrers=self.referrers,
            cache=self.cache,
            fills=self.fills,
        )

    def _tag_cache(self, clock: Clock) -> TagCache:
        cfg = self.config
        if cfg.redis.url is None:
            return TagCache(ttl=cfg.tags.ttl, clock=clock)
        return TagCache.redis(
            cfg.redis.url,
            ttl=cfg.tags.ttl,
            clock=clock,
            on_error=self.metrics.shared_tag_cache_failed,
        )

    @property
    def serving(self) -> bool:
        """Started and not stopping."""
        return self._running is not None

    async def start(self) -> None:
        """Open every part in order (see the module docstring). Raises what a part raises
        (then everything opened so far is closed again); RuntimeError when already started."""
        if self._running is not None:
            raise RuntimeError("edge node already started")
        stack = contextlib.AsyncExitStack()
        try:
            await self.upstreams.open()
            stack.push_async_callback(self.upstreams.close)
            stack.callback(self.access.close)
            stack.push_async_callback(self.peer_sources.close)
            if self._own_cache:
                await self.cache.open()
                stack.push_async_callback(self.cache.close)
            if self.region is not None:
                stack.push_async_callback(self._close_region, self.region)
            await self.peer_token.agree()
            if self._own_fills:
                await self.fills.start()
                stack.push_async_callback(self.fills.close)
            stack.push_async_callback(self.tags.close)
            await self.manifest_store.open()
            stack.push_async_callback(self.manifest_store.close)
            stack.push_async_callback(self.manifests.close)
            stack.push_async_callback(self.referrers.close)
        except BaseException:
            await stack.aclose()
            raise
        self._running = stack

    async def stop(self) -> None:
        """Close every part in reverse order (see the module docstring). Idempotent."""
        stack, self._running = self._running, None
        if stack is not None:
            await stack.aclose()

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        """:meth:`start`, ``yield``, :meth:`stop`: an aiohttp ``cleanup_ctx``."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def health(self) -> dict[str, object]:
        """What ``/healthz`` reports: serving or not, the upstreams' names, whether a region
        (Redis) is configured, the cache's bytes (while serving)."""
        return {
            "status": "ok" if self.serving else "unavailable",
            "upstreams": [u.name for u in self.config.upstreams],
            "redis": self.region is not None,
            "cache_bytes": self.cache.bytes_used if self.serving else None,
        }

    @staticmethod
    async def _close_region(region: RegionLock) -> None:
        with contextlib.suppress(Exception):
            await region.close()
