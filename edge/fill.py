"""Single-flight fills: one download per digest per node (and per region), shared by all waiters.

Interface (edge/blobs.py, edge/peers.py)::

    fills = FillManager(cache, region=lock_or_None, advertise_url=url_or_None,
                        peer_source=lambda owner_url, digest: PeerSource(...), metrics=...)
    await fills.start()
    fill = await fills.get(digest, lambda: UpstreamSource(client, repo, digest))
                                         # TooLargeToCache: a digest known to be too large
    announced = await fill.announced()   # the source's size, before cache space was reserved
    total = await fill.size()            # OCI error (BlobUnknown, TooManyRequests, ...) if the
                                         # fill failed before the size was known;
                                         # TooLargeToCache: serve by pass-through instead
    async for chunk in fill.read(start, end):   # inclusive range; FillFailed mid-stream
        ...
    async for fd, offset, count in fill.spans(start, end):   # the same bytes as file spans
        ...                                                   # (zero-copy: os.sendfile)
    blob = await fill.result()           # CachedBlob once committed (or the fill's error)
    fills.active(digest) -> Fill | None
    await fills.close()                  # drains running fills (drain_timeout), then cancels

Shutdown order: ``fills.close()``, then the RegionLock's and the BlobCache's ``close()``.

Guarantees:
- Fills are tasks owned by the FillManager (one :class:`edge.singleflight.SingleFlight`
  task per digest), never by a request: every reader may go away and the fill still
  completes, is verified and committed. :meth:`FillManager.get` registers the fill before
  its first ``await``, so concurrent callers on this node always share one fill
  (``fills_joined``); when the blob is already cached it returns a completed Fill on the file.
  A finished fill is forgotten when its task ends (a call in between joins the finished fill).
- Region: with a :class:`RegionLock`, the fill first takes ``fill:<digest>``. If another
  node holds it, this node fills from that node's peer endpoint instead of the upstream (it
  still verifies and caches its own copy). When the owner dies or answers 404 and the lock is
  gone, this node takes the lock and continues from the upstream at its offset; when the lock
  stays held but the owner keeps failing for longer than the lock TTL, it steals the lock
  (``lock_takeovers``). Redis unreachable: node-local fill (``redis_fallbacks``).
- Bytes are hashed as written; the blob is committed only when digest and size match. On any
  failure (wrong bytes, short stream after the allowed resumes, cancellation at shutdown)
  every reader gets :class:`FillFailed`, nothing is cached, the temp file is removed, the
  reservation and the lock are released.
- A read whose range reaches the blob's last byte gets the blob's last :data:`FINAL_HOLD`
  bytes only after the blob was verified and committed, so a full-blob response never ends
  cleanly with bad bytes. A range ending earlier is served as bytes land (a later digest mismatch cannot
  recall them).
- The cache bound holds: the total size is reserved before the first byte is written.
- A blob larger than the whole cache, or one for which running fills do not free room within
  ``space_wait`` seconds, is not filled: ``size()`` (and ``read()``) raise
  :class:`TooLargeToCache` with the announced size and a reason (``too_large``/``no_space``;
  counted in ``fills_failed{reason}``), and the caller serves it by pass-through
  (:mod:`edge.passthrough`). Digests found too large are remembered (bounded, LRU), so the
  next :meth:`FillManager.get` for one raises :class:`TooLargeToCache` at once, without an
  upstream request. ``announced()`` resolves within the upstream's timeouts, ``size()`` at
  most ``space_wait`` seconds after it.

Modules: this one (:class:`FillManager`, the node's fills, and the public names), the
fill's state machine and waiter API (:mod:`edge.fillstate`), the task that runs one fill
(source choice, streaming, failover, commit: :mod:`edge.fillrun`), the socket body its
threads read (:mod:`edge.fillsocket`), the collectors (:mod:`edge.fillmetrics`).

Byte path: the event loop only coordinates. A plain-HTTP body with ``Content-Length`` is read
from the connection's socket by the fill's writer thread (``recv_into`` a ring of reusable
buffers, ``pwrite`` in place, hashed on a second thread from the same buffers:
:meth:`regcore.storage.writepipeline.WritePipeline.absorb`); other bodies (TLS, in-process
sources) are received by aiohttp and written and hashed by the same thread. Readers serve the
growing temp file through their own descriptor (it stays valid across the commit's rename and
an eviction's unlink): :meth:`Fill.spans` gives file spans to ``os.sendfile`` (edge/blobs.py,
edge/peers.py), :meth:`Fill.read` reads them. They wake when the writer thread reports
progress (when the source has nothing more for now, and at least every MiB).
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict

from edge.cache import BlobCache
from edge.fillmetrics import EdgeFillMetrics
from edge.fillrun import (
    NO_SPACE,
    TOO_LARGE,
    FillPlan,
    FillRun,
    PeerSourceFactory,
    SourceFactory,
    TooLargeToCache,
)
from edge.fillstate import FINAL_HOLD, READ_CHUNK, Fill, FillFailed, FillState
from edge.regionlock import Lease, RegionLock
from edge.singleflight import SingleFlight
from regcore import errors
from regcore.digest import Digest

REMEMBERED_TOO_LARGE = 4096  # digests known not to fit the cache at all

__all__ = [
    "FINAL_HOLD",
    "NO_SPACE",
    "READ_CHUNK",
    "TOO_LARGE",
    "EdgeFillMetrics",
    "Fill",
    "FillFailed",
    "FillManager",
    "FillState",
    "PeerSourceFactory",
    "SourceFactory",
    "TooLargeToCache",
]


class FillManager:
    """Owns the fills of one node. Use from one event loop."""

    def __init__(
        self,
        cache: BlobCache,
        *,
        region: RegionLock | None,
        advertise_url: str | None,
        peer_source: PeerSourceFactory,
        metrics: EdgeFillMetrics | None = None,
        chunk_flush_bytes: int = 64 * 1024,
        write_ahead_bytes: int = 8 * 1024 * 1024,
        upstream_resumes: int = 1,
        peer_retry_interval: float = 0.2,
        drain_timeout: float = 10.0,
        space_wait: float = 5.0,
        direct_io: bool = True,
    ) -> None:
        if region is not None and not advertise_url:
            raise ValueError("a region lock needs this node's advertise_url")
        self.cache = cache
        self.region = region
        self.advertise_url = advertise_url
        self.peer_source = peer_source
        self.metrics = metrics
        self.chunk_flush_bytes = chunk_flush_bytes
        self.write_ahead_bytes = write_ahead_bytes
        self.upstream_resumes = upstream_resumes
        self.peer_retry_interval = peer_retry_interval
        self.drain_timeout = drain_timeout
        self.space_wait = space_wait
        self.direct_io = direct_io  # fills from a socket write with O_DIRECT where possible
        self._too_large: OrderedDict[Digest, int] = OrderedDict()
        self._flight: SingleFlight[Digest, None] = SingleFlight()
        self._fills: dict[Digest, Fill] = {}  # the fill of each running flight
        self._releases: set[asyncio.Task[None]] = set()  # region leases going back
        self._closing = False
        if metrics is not None:
            metrics.bind_cache(cache)
            metrics.fills_active.set_function(lambda: len(self._fills))

    async def start(self) -> None:
        self._closing = False

    async def close(self) -> None:
        """Stop taking fills; let running ones finish for ``drain_timeout`` s, then cancel them;
        then wait for their region leases to be released."""
        self._closing = True
        await self._flight.drain(self.drain_timeout)
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    def active(self, digest: Digest) -> Fill | None:
        return self._fills.get(digest)

    async def get(self, digest: Digest, source_factory: SourceFactory) -> Fill:
        """Join the fill of ``digest`` on this node, or start one.

        Raises Unavailable when closing, TooLargeToCache for a digest a fill found larger
        than the whole cache (remembered, so no upstream request is made for it again).
        """
        fill = self._fills.get(digest)
        if fill is not None:
            self._count("fills_joined")
            return fill
        cached = self.cache.lookup(digest)
        if cached is not None:
            return Fill.completed(cached)
        known = self._too_large.get(digest)
        if known is not None and known > self.cache.max_bytes:
            self._too_large.move_to_end(digest)
            raise TooLargeToCache(digest, known, TOO_LARGE)
        if self._closing:
            raise errors.Unavailable("edge shutting down")
        fill = Fill(digest)
        run = FillRun(self._plan(), fill, source_factory)
        task, started = self._flight.start(digest, run.run)
        if not started:  # cannot happen: a flight's fill stays in _fills until the flight ends
            raise RuntimeError(f"fill {digest}: a flight without its fill")
        self._fills[digest] = fill
        task.add_done_callback(functools.partial(self._forget, digest, fill))
        self._count("fills_started")
        return fill

    def _plan(self) -> FillPlan:
        return FillPlan(
            cache=self.cache,
            region=self.region,
            advertise_url=self.advertise_url,
            peer_source=self.peer_source,
            metrics=self.metrics,
            release=self._release,
            chunk_flush_bytes=self.chunk_flush_bytes,
            write_ahead_bytes=self.write_ahead_bytes,
            upstream_resumes=self.upstream_resumes,
            peer_retry_interval=self.peer_retry_interval,
            space_wait=self.space_wait,
            direct_io=self.direct_io,
        )

    def _forget(self, digest: Digest, fill: Fill, task: object) -> None:
        """The flight of ``fill`` ended (runs right after SingleFlight forgot the key)."""
        if self._fills.get(digest) is fill:
            del self._fills[digest]
        failure = fill.failure
        if isinstance(failure, TooLargeToCache) and failure.reason == TOO_LARGE:
            self._too_large[digest] = failure.total
            self._too_large.move_to_end(digest)
            while len(self._too_large) > REMEMBERED_TOO_LARGE:
                self._too_large.popitem(last=False)

    def _release(self, lease: Lease) -> None:
        region = self.region
        if region is None:
            return
        task = asyncio.get_running_loop().create_task(
            region.release(lease), name=f"release fill:{lease.digest}"
        )
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def _count(self, name: str, amount: float = 1, **labels: str) -> None:
        if self.metrics is not None:
            self.metrics.count(name, amount, **labels)
