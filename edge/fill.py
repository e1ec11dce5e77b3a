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
- Fills are tasks owned by the FillManager, never by a request: every reader may go away and
  the fill still completes, is verified and committed. :meth:`FillManager.get` registers the
  fill before its first ``await``, so concurrent callers on this node always share one fill
  (``fills_joined``); when the blob is already cached it returns a completed Fill on the file.
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

The task that runs one fill (source choice, streaming, failover, commit) is
:class:`edge.fillrun.FillRun`.

Readers serve the growing temp file through their own descriptor (it stays valid across the
commit's rename and an eviction's unlink): :meth:`Fill.spans` gives file spans to
``os.sendfile`` (edge/blobs.py), :meth:`Fill.read` reads them. They wake on an event set each
time the fill's writer thread has written and hashed another batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from edge.cache import BlobCache, CachedBlob
from edge.fillrun import NO_SPACE, TOO_LARGE, FillRun, SourceFactory, TooLargeToCache, describe
from edge.regionlock import RegionLock
from edge.sources import BlobSource
from regcore import errors
from regcore.digest import Digest

READ_CHUNK = 256 * 1024
FINAL_HOLD = 64 * 1024  # bytes at the blob's end withheld from readers until it is committed
_INLINE_READ = 64 * 1024
PeerSourceFactory = Callable[[str, Digest], BlobSource]
REMEMBERED_TOO_LARGE = 4096  # digests known not to fit the cache at all

__all__ = [
    "NO_SPACE",
    "TOO_LARGE",
    "EdgeFillMetrics",
    "Fill",
    "FillFailed",
    "FillManager",
    "SourceFactory",
    "TooLargeToCache",
]


class FillFailed(errors.UpstreamUnavailable):  # type: ignore[misc,valid-type]
    """The fill broke after its size was known: the response must be cut short."""

    message = "blob transfer from upstream failed"


class EdgeFillMetrics:
    """Fill and cache collectors (namespace ``quayside_edge``; counters end in ``_total``).

    fills_started, fills_joined, fills_remote, fills_failed{reason}, fill_bytes{source},
    cache_evictions, cache_evicted_bytes, redis_fallbacks, lock_takeovers (counters);
    fills_active, cache_bytes, cache_reserved_bytes, cache_entries (gauges).
    """

    def __init__(self, registry: CollectorRegistry, namespace: str = "quayside_edge") -> None:
        self.registry = registry
        self.namespace = namespace

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, namespace=namespace, registry=registry)

        self.fills_started = counter("fills_started", "Fills run by this node (any source)")
        self.fills_joined = counter(
            "fills_joined", "Requests that joined a fill in progress on this node"
        )
        self.fills_remote = counter(
            "fills_remote", "Fills that streamed from the peer owning the region lock"
        )
        self.fills_failed = counter(
            "fills_failed", "Fills that failed (nothing cached)", ("reason",)
        )
        self.fill_bytes = counter("fill_bytes", "Bytes written by fills", ("source",))
        self.evictions = counter("cache_evictions", "Blobs evicted from the cache")
        self.evicted_bytes = counter("cache_evicted_bytes", "Bytes evicted from the cache")
        self.redis_fallbacks = counter(
            "redis_fallbacks", "Fills run node-locally because Redis was unavailable"
        )
        self.lock_takeovers = counter("lock_takeovers", "Fills taken over from a failed owner node")
        self.fills_active = gauge("fills_active", "Fills in progress on this node")
        self.cache_bytes = gauge("cache_bytes", "Bytes of committed blobs in the cache")
        self.cache_reserved = gauge("cache_reserved_bytes", "Bytes reserved by fills in progress")
        self.cache_entries = gauge("cache_entries", "Blobs in the cache")

    def bind_cache(self, cache: BlobCache) -> None:
        self.cache_bytes.set_function(lambda: cache.bytes_used)
        self.cache_reserved.set_function(lambda: cache.bytes_reserved)
        self.cache_entries.set_function(lambda: cache.entries)
        cache.add_evict_listener(self._on_evict)

    def _on_evict(self, digest: Digest, size: int) -> None:
        self.evictions.inc()
        self.evicted_bytes.inc(size)

    def value(self, name: str, **labels: str) -> float:
        """A sample's value (counters: pass the name without ``_total``); 0.0 when absent."""
        for suffix in ("_total", ""):
            v = self.registry.get_sample_value(f"{self.namespace}_{name}{suffix}", labels)
            if v is not None:
                return v
        return 0.0


class Fill:
    """One blob being filled (or already cached). Shared by every waiter on this node."""

    def __init__(self, digest: Digest) -> None:
        loop = asyncio.get_running_loop()
        self.digest = digest
        self._announced: asyncio.Future[int] = loop.create_future()
        self._size: asyncio.Future[int] = loop.create_future()
        self._done: asyncio.Future[CachedBlob] = loop.create_future()
        self._written = 0
        self._path: Path | None = None
        self._error: FillFailed | None = None
        self._progress = asyncio.Event()
        self.source = ""
        self.readers = 0

    @classmethod
    def completed(cls, blob: CachedBlob) -> Fill:
        fill = cls(blob.digest)
        fill._path = blob.path
        fill._written = blob.size
        fill._announced.set_result(blob.size)
        fill._size.set_result(blob.size)
        fill._done.set_result(blob)
        fill.source = "cache"
        return fill

    # -- waiter API -----------------------------------------------------------------------
    @property
    def done(self) -> asyncio.Future[CachedBlob]:
        """The committed blob (or the failure); a shield, so a cancelled awaiter harms no one."""
        return asyncio.shield(self._done)

    @property
    def total(self) -> int | None:
        return self._size.result() if self._size.done() and not self._size.exception() else None

    @property
    def written(self) -> int:
        """Bytes readable now."""
        return self._written

    @property
    def finished(self) -> bool:
        return self._done.done()

    async def announced(self) -> int:
        """The size the source announced, before cache space was reserved for it (no byte is
        promised yet). Raises the fill's error if it failed before the source answered."""
        return await asyncio.shield(self._announced)

    async def size(self) -> int:
        """Total size once known and reserved in the cache; raises the fill's error if it
        failed before that (:class:`TooLargeToCache` when the blob cannot be cached)."""
        return await asyncio.shield(self._size)

    async def result(self) -> CachedBlob:
        """The committed blob; raises FillFailed (or the source's OCI error)."""
        return await asyncio.shield(self._done)

    async def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``start..end`` (inclusive; ``end`` None means to the last byte) as they land,
        in pieces of at most :data:`READ_CHUNK` (the pieces of :meth:`spans`, read).

        Raises RangeInvalid for an unsatisfiable range, FillFailed when the fill fails.
        """
        async with contextlib.aclosing(self.spans(start, end)) as spans:
            async for fd, offset, count in spans:
                stop = offset + count
                while offset < stop:
                    n = min(READ_CHUNK, stop - offset)
                    data = (
                        os.pread(fd, n, offset)
                        if n <= _INLINE_READ
                        else await asyncio.to_thread(os.pread, fd, n, offset)
                    )
                    if len(data) != n:
                        raise FillFailed(f"{self.digest}: file shorter than expected")
                    offset += n
                    yield data

    async def spans(
        self, start: int = 0, end: int | None = None
    ) -> AsyncIterator[tuple[int, int, int]]:
        """``(fd, offset, count)``: the bytes of ``start..end`` (inclusive; ``end`` None means
        to the last byte) as they land, as spans of a descriptor of the (growing) file that
        this iterator owns (valid until it is closed; serve them with ``os.sendfile``).

        Spans are contiguous and in order. When the range reaches the blob's last byte, its
        part in the blob's last :data:`FINAL_HOLD` bytes comes only once the fill is verified
        and committed; a range ending earlier is served as bytes land. Raises RangeInvalid for
        an unsatisfiable range, FillFailed when the fill fails.
        """
        total = await self.size()
        last = total - 1 if end is None else min(end, total - 1)
        if start < 0 or (total > 0 and start > last) or (total == 0 and start > 0):
            raise errors.RangeInvalid(f"bytes {start}-{end} of {total}")
        if total == 0:
            await self.result()
            return
        fd = await self._open()
        self.readers += 1
        try:
            pos, stop = start, last + 1
            tail = total - FINAL_HOLD if stop == total else stop  # held until the commit
            while pos < stop:
                upto = min(await self._wait_beyond(pos), stop)
                if upto > tail and not self._done.done():
                    if pos < tail:
                        upto = tail
                    else:
                        await self.result()
                        upto = stop  # committed: every byte is in the file
                yield fd, pos, upto - pos
                pos = upto
        finally:
            self.readers -= 1
            os.close(fd)

    # -- fill side ------------------------------------------------------------------------
    def _announce(self, total: int) -> None:
        if not self._announced.done():
            self._announced.set_result(total)

    def _advance(self, written: int) -> None:
        self._written = written
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    def _finish(self, blob: CachedBlob) -> None:
        self._path = blob.path
        if not self._done.done():
            self._done.set_result(blob)
        self._advance(blob.size)

    def _fail(self, exc: BaseException) -> None:
        failed = (
            exc if isinstance(exc, FillFailed) else FillFailed(f"{self.digest}: {describe(exc)}")
        )
        if failed is not exc:
            failed.__cause__ = exc
        self._error = failed
        early: BaseException = failed
        if not self._size.done():  # no byte promised yet: pass OCI errors on as they are
            early = exc if isinstance(exc, errors.RegistryError) else failed
            if not self._announced.done():
                self._announced.set_exception(early)
                self._announced.exception()
            self._size.set_exception(early)
            self._size.exception()  # mark retrieved
        if not self._done.done():
            self._done.set_exception(early)
            self._done.exception()
        self._advance(self._written)

    async def _wait_beyond(self, pos: int) -> int:
        while True:
            if self._error is not None:
                raise self._error
            if self._written > pos:
                return self._written
            await self._progress.wait()

    async def _open(self) -> int:
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                return os.open(self._path, os.O_RDONLY)
        blob = await self.result()  # temp file renamed (committed) or removed (failed)
        try:
            return os.open(blob.path, os.O_RDONLY)
        except FileNotFoundError:
            raise FillFailed(f"{self.digest}: evicted before it could be read") from None


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
        self._too_large: OrderedDict[Digest, int] = OrderedDict()
        self._active: dict[Digest, Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        if metrics is not None:
            metrics.bind_cache(cache)
            metrics.fills_active.set_function(lambda: len(self._active))

    async def start(self) -> None:
        self._closing = False

    async def close(self) -> None:
        """Stop taking fills; let running ones finish for ``drain_timeout`` s, then cancel them."""
        self._closing = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    def active(self, digest: Digest) -> Fill | None:
        return self._active.get(digest)

    async def get(self, digest: Digest, source_factory: SourceFactory) -> Fill:
        """Join the fill of ``digest`` on this node, or start one.

        Raises Unavailable when closing, TooLargeToCache for a digest a fill found larger
        than the whole cache (remembered, so no upstream request is made for it again).
        """
        fill = self._active.get(digest)
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
        self._active[digest] = fill
        run = FillRun(self, fill, source_factory)
        task = asyncio.create_task(run.run(), name=f"fill {digest}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._count("fills_started")
        return fill

    def _note_too_large(self, digest: Digest, total: int) -> None:
        self._too_large[digest] = total
        self._too_large.move_to_end(digest)
        while len(self._too_large) > REMEMBERED_TOO_LARGE:
            self._too_large.popitem(last=False)

    def _count(self, name: str, amount: float = 1, **labels: str) -> None:
        if self.metrics is not None:
            counter: Counter = getattr(self.metrics, name)
            (counter.labels(**labels) if labels else counter).inc(amount)
