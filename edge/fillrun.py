"""The task behind one fill: choose a source, stream it to a temp file, fail over, verify, commit.

:class:`edge.fill.FillManager` starts one :class:`FillRun` per :class:`edge.fillstate.Fill`
(as a task it owns). The run knows the fill only as a :class:`edge.fillstate.FillSink`
(announce, open, advance, commit, fail) and the node only through its :class:`FillPlan`
(cache, region lock, sources, settings, metrics, and where to hand back a region lease).
The guarantees are stated in :mod:`edge.fill`; in short:

- Source: with a region lock, ``fill:<digest>`` decides between the upstream (lock taken by
  this node) and the owner's peer endpoint; Redis unreachable means upstream
  (``redis_fallbacks``).
- The total size is reserved in the cache before the first byte is written (the bound holds).
  A blob larger than the whole cache, or one for which no room was freed within the
  plan's ``space_wait`` seconds, fails the fill with :class:`TooLargeToCache` before any
  byte is promised (``Fill.size()`` raises it; the caller serves the blob by pass-through,
  see :mod:`edge.passthrough`). Nothing is written, nothing is retried.
- The byte path is the cache writer's own thread (``StagedBlob.pipeline``, see
  :class:`regcore.storage.writepipeline.WritePipeline`). A plain-HTTP body with
  ``Content-Length`` (upstream or peer) is read by that thread straight from the
  connection's socket once aiohttp has done the exchange (:mod:`edge.fillsocket`):
  ``recv_into`` reusable buffers, ``pwrite`` (``O_DIRECT`` where the cache's filesystem
  allows it and ``direct_io`` is on: no page-cache copy), hashed on another thread, the
  newest pieces readable by waiters from memory before they reach the file
  (:mod:`regcore.storage.absorb`); the event loop only coordinates. Other bodies (TLS, a
  server ignoring ``Range``, in-process sources) are received on the loop and fed to the
  same threads (:mod:`edge.fillfeed`), at most ``write_ahead_bytes`` ahead. A source that breaks is resumed at the written offset
  (``upstream_resumes`` times without progress); a failing peer is followed to the lock's new
  owner or taken over (``lock_takeovers``).
- The blob is committed only when digest and size match. On any failure the Fill is failed,
  the temp file discarded, and the reservation released -- also on cancellation. The region
  lease, if one was taken, goes back through ``plan.release`` once the fill is finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from prometheus_client import Counter

from edge.cache import BlobCache, Reservation
from edge.fillfeed import feed
from edge.fillmetrics import EdgeFillMetrics
from edge.fillsocket import SocketBody, can_take
from edge.fillstate import FillSink, describe
from edge.regionlock import Lease, RegionLock, RegionUnavailable, Taken
from edge.sources import BlobSource, ShortStream, is_transient
from regcore import errors
from regcore.digest import Digest
from regcore.storage.interfaces import StagedBlob

log = logging.getLogger("edge.fill")  # the fill's log records, wherever the code lives

SourceFactory = Callable[[], BlobSource]
PeerSourceFactory = Callable[[str, Digest], BlobSource]
TOO_LARGE = "too_large"
NO_SPACE = "no_space"


class TooLargeToCache(errors.Unavailable):  # type: ignore[misc,valid-type]
    """The blob cannot go through the cache; serve it straight from the upstream instead.

    ``reason`` is :data:`TOO_LARGE` (larger than the whole cache: it never will fit) or
    :data:`NO_SPACE` (fills in progress held the room longer than ``space_wait``).
    ``total`` is the size the source announced. Raised by ``Fill.size()``/``Fill.read()``
    before any byte was promised, and by ``FillManager.get`` for a digest already known to
    be too large. As an OCI error (should it reach a client) it is 503 UNAVAILABLE.
    """

    message = "blob cannot be cached"

    def __init__(self, digest: Digest, total: int, reason: str) -> None:
        super().__init__({"digest": str(digest), "size": total, "reason": reason})
        self.digest = digest
        self.total = total
        self.reason = reason


@dataclass(frozen=True)
class FillPlan:
    """What a run needs from its node: fixed when the fill starts."""

    cache: BlobCache
    region: RegionLock | None
    advertise_url: str | None
    peer_source: PeerSourceFactory
    metrics: EdgeFillMetrics | None
    release: Callable[[Lease], None]  # takes a lease back once the fill is finished
    chunk_flush_bytes: int
    write_ahead_bytes: int
    upstream_resumes: int
    peer_retry_interval: float
    space_wait: float
    direct_io: bool = True

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        if self.metrics is not None:
            self.metrics.count(name, amount, **labels)


class FillRun:
    """The task behind one Fill: choose a source, stream to disk, fail over, verify, commit."""

    def __init__(self, plan: FillPlan, fill: FillSink, upstream: SourceFactory) -> None:
        self.plan = plan
        self.fill = fill
        self.digest = fill.digest
        self.upstream = upstream
        self.source: BlobSource | None = None
        self.owner: str | None = None  # set while streaming from a peer
        self.lease: Lease | None = None
        self.writer: StagedBlob | None = None  # the cache's temp file, written by its thread
        self.reservation: Reservation | None = None
        self.total: int | None = None
        self.resumes_left = plan.upstream_resumes
        self.fail_offset = -1
        self.peer_fail_since: float | None = None
        self.bytes_counter: Counter | None = None  # fill_bytes{source} of the current source

    @property
    def offset(self) -> int:
        return self.writer.size if self.writer is not None else 0

    async def run(self) -> None:
        """Run the fill to its end (committed or failed). Raises only on cancellation."""
        plan, fill = self.plan, self.fill
        try:
            await self._choose_source()
            await self._stream()
            assert self.writer is not None
            assert self.reservation is not None and self.total is not None
            blob = await plan.cache.commit(self.writer, self.digest, self.total, self.reservation)
        except BaseException as exc:
            self._failed(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            fill.commit(blob)
            log.info("fill %s committed (%d bytes from %s)", self.digest, blob.size, fill.source)
        finally:
            if self.reservation is not None:
                self.reservation.release()
            if self.lease is not None:
                plan.release(self.lease)

    def _failed(self, exc: BaseException) -> None:
        reason = _reason(exc)
        self.plan.count("fills_failed", reason=reason)
        if isinstance(exc, TooLargeToCache):
            log.info("fill %s not cached (%s, %d bytes)", self.digest, reason, exc.total)
        else:
            log.warning("fill %s failed (%s): %s", self.digest, reason, describe(exc))
        self.fill.fail(exc)
        if self.writer is not None:
            self.writer.discard()

    # -- source choice ----------------------------------------------------------------------
    async def _choose_source(self) -> None:
        region, url = self.plan.region, self.plan.advertise_url
        if region is None or url is None:
            return self._use_upstream()
        try:
            for _ in range(3):
                got = await region.acquire(self.digest, url)
                if isinstance(got, Taken) and got.owner == url:  # our own stale lock (restart)
                    got = await region.steal(self.digest, url, url) or got
                if isinstance(got, Lease):
                    self.lease = got
                    return self._use_upstream()
                if got.owner != url:
                    self._use_peer(got.owner)
                    self.plan.count("fills_remote")
                    return None
        except RegionUnavailable:
            self.plan.count("redis_fallbacks")
        return self._use_upstream()  # Redis unavailable (or a lock too contended): node-local

    def _use_upstream(self) -> None:
        self.source = self.upstream()
        self.owner = None
        self._described()

    def _use_peer(self, owner: str) -> None:
        self.source = self.plan.peer_source(owner, self.digest)
        self.owner = owner
        self.peer_fail_since = None
        self._described()

    def _described(self) -> None:
        assert self.source is not None
        self.fill.source = self.source.description
        metrics = self.plan.metrics
        self.bytes_counter = (  # labelled once per source, not per chunk
            metrics.fill_bytes.labels(source=self.source.description) if metrics else None
        )

    # -- streaming ---------------------------------------------------------------------------
    async def _stream(self) -> None:
        while True:
            assert self.source is not None
            try:
                total, chunks = await self.source.open(self.offset)
                try:
                    await self._accept_total(total)
                    body = self._take_socket(chunks, total - self.offset)
                    self.plan.count("fill_bodies", reader="loop" if body is None else "socket")
                    if body is not None:
                        await self._absorb(body)
                    else:
                        await self._feed(chunks, total - self.offset)
                finally:
                    aclose = getattr(chunks, "aclose", None)
                    if aclose is not None:
                        await aclose()
                if self.offset == total:
                    return
                raise ShortStream(
                    f"{self.source.description} stream ended at {self.offset} of {total} bytes"
                )
            except Exception as exc:
                if not await self._recover(exc):
                    raise

    async def _accept_total(self, total: int) -> None:
        if self.total is None:
            self.fill.announce(total)
            self.reservation = await self._reserve(total)
            self.total = total
            self.writer = self.plan.cache.new_writer(flush_bytes=self.plan.chunk_flush_bytes)
            self.writer.pipeline(
                max_in_flight=self.plan.write_ahead_bytes,
                on_written=self.fill.advance,
                direct_io=self.plan.direct_io,
            )
            self.writer.preallocate(total)
            self.fill.open(total, self.writer.path, live=self.writer.locate, followed=self.writer)
        elif total != self.total:
            raise errors.SizeInvalid(f"source now says {total} bytes, earlier {self.total}")

    async def _reserve(self, total: int) -> Reservation:
        """Room for ``total`` bytes; TooLargeToCache when it cannot be had (soon enough)."""
        cache = self.plan.cache
        if total > cache.max_bytes:
            raise TooLargeToCache(self.digest, total, TOO_LARGE)
        try:
            async with asyncio.timeout(self.plan.space_wait):
                return await cache.reserve(total)
        except (TimeoutError, errors.Unavailable):  # running fills hold the room
            raise TooLargeToCache(self.digest, total, NO_SPACE) from None

    async def _write(self, chunk: bytes) -> None:
        assert self.writer is not None and self.total is not None and self.source is not None
        if self.offset + len(chunk) > self.total:
            raise errors.SizeInvalid(f"source sent more than {self.total} bytes")
        await self.writer.write(chunk)  # the writer thread advances the fill once written
        if self.bytes_counter is not None:
            self.bytes_counter.inc(len(chunk))

    def _take_socket(self, chunks: AsyncIterator[bytes], wanted: int) -> SocketBody | None:
        """The rest of the body as a socket the writer thread reads, when the source can
        hand its response over (see :mod:`edge.fillsocket`); else None (read ``chunks``)."""
        detach = getattr(chunks, "detach", None)
        if detach is None or wanted <= 0:
            return None
        resp = detach(lambda r: can_take(r, wanted))
        if resp is None:
            return None
        try:
            return SocketBody.take(resp, wanted)
        except BaseException:
            resp.close()
            raise

    async def _feed(self, chunks: AsyncIterator[bytes], count: int) -> None:
        """The ``count`` remaining bytes the loop receives, through the writer's threads
        (:func:`edge.fillfeed.feed`)."""
        assert self.writer is not None and self.total is not None
        await feed(
            self.writer,
            chunks,
            count,
            limit=self.plan.write_ahead_bytes,
            total=self.total,
            counter=self.bytes_counter,
        )

    async def _absorb(self, body: SocketBody) -> None:
        """Write ``body`` (its buffered prefix, then its socket on the writer thread)."""
        assert self.writer is not None
        try:
            if body.prefix:
                await self._write(body.prefix)
            before, ended = self.offset, self.writer.holdbacks_ended
            try:
                await self.writer.absorb(body, body.remaining, interrupt=body.interrupt)
            finally:
                if self.bytes_counter is not None:
                    self.bytes_counter.inc(self.offset - before)
                if self.writer.holdbacks_ended > ended:
                    self.plan.count("fill_holdbacks_ended")
        finally:
            body.close()

    # -- failure handling -------------------------------------------------------------------------
    async def _recover(self, exc: Exception) -> bool:
        """Whether to go on (the source may have been switched); False: the fill fails."""
        if isinstance(exc, TooLargeToCache) or not is_transient(exc):
            return False
        progressed = self.offset > self.fail_offset
        self.fail_offset = self.offset
        if self.owner is not None:
            return await self._peer_failover(exc, progressed)
        if progressed:
            self.resumes_left = self.plan.upstream_resumes
        if self.resumes_left <= 0:
            return False
        self.resumes_left -= 1
        log.info(
            "fill %s: %s broke at %d (%s); resuming",
            self.digest,
            self.fill.source,
            self.offset,
            describe(exc),
        )
        return True

    async def _peer_failover(self, exc: Exception, progressed: bool) -> bool:
        region, url, owner = self.plan.region, self.plan.advertise_url, self.owner
        assert region is not None and url is not None and owner is not None
        loop = asyncio.get_running_loop()
        if progressed or self.peer_fail_since is None:
            self.peer_fail_since = loop.time()
        log.info(
            "fill %s: peer %s failed at %d (%s)", self.digest, owner, self.offset, describe(exc)
        )
        try:
            current = await region.owner(self.digest)
            if current is None:
                got = await region.acquire(self.digest, url)
                if isinstance(got, Lease):
                    return self._take_over(got)
                current = got.owner
            if current not in (owner, url):
                self._use_peer(current)  # the lock moved on: follow the new owner
                return True
            if current == url or loop.time() - self.peer_fail_since >= region.ttl:
                lease = await region.steal(self.digest, current, url)
                if lease is not None:
                    return self._take_over(lease)
        except RegionUnavailable:
            self.plan.count("redis_fallbacks")
            return self._take_over(None)
        await asyncio.sleep(self.plan.peer_retry_interval)
        return True

    def _take_over(self, lease: Lease | None) -> bool:
        log.warning(
            "fill %s: taking over from %s at offset %d", self.digest, self.owner, self.offset
        )
        self.lease = lease
        self.plan.count("lock_takeovers")
        self._use_upstream()
        self.resumes_left = self.plan.upstream_resumes
        return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, TooLargeToCache):
        return exc.reason
    if isinstance(exc, errors.RegistryError):
        return exc.code.lower()
    if isinstance(exc, ShortStream):
        return "short"
    return "source"
