"""Blob upload sessions on disk: the :class:`Uploads` manager behind ``/v2/<name>/blobs/uploads/``.

A session lives where registry:2 keeps it: ``repositories/<name>/_uploads/<id>/data`` (the bytes
received so far) and ``startedat``. The directory *is* the session: after a restart the upload
is still there, its offset is the size of ``data``, and the running hash, kept in memory per
session, is rebuilt from disk (in a worker thread) on the next PATCH or PUT.

Guarantees:
- Bodies stream to disk through :func:`origin.uploadchunks.append_chunk`: received on the
  event loop while a dedicated thread writes and hashes what came before; a request never
  holds more than :data:`~origin.uploadchunks.IN_FLIGHT` (4 MiB) received and not written.
- One :class:`asyncio.Lock` per session: concurrent PATCHes on one session run one after the
  other, and the second sees the moved offset (416 when its ``Content-Range`` no longer fits).
- :meth:`Uploads.finish` verifies the digest of everything received, fsyncs, and moves ``data``
  into the store atomically (:meth:`~regcore.storage.interfaces.BlobInstaller.install`; a blob that already exists
  is success), then links it into the repository. A wrong digest raises ``DIGEST_INVALID`` and
  cancels the session, as distribution does; the blob tree is untouched.
- A chunk that is refused (size limit, length mismatch) leaves the session at its previous
  offset. A client that disconnects mid-chunk leaves what reached the disk; the session's
  offset tells where to resume. Either way the writer thread has finished before the
  session's lock is released: no write lands after a rollback or a later request's offset.
- With ``quotas``, every body is metered as it arrives (:mod:`origin.quotameter`): over the
  namespace's quota the request is refused with 403 DENIED before the chunk that would not fit
  is written (before any byte, when ``Content-Length``/``Content-Range`` announce the size),
  and the session is cancelled, its bytes dropped at once.
- Upload ids are uuid4 (hex, or dashed as registry:2 writes them); anything else is
  ``BLOB_UPLOAD_UNKNOWN`` and never reaches a path (:mod:`origin.uploadstatus`, which also
  builds the ``Location``/``Range``/``Docker-Upload-UUID`` headers of a session).

Errors: ``BLOB_UPLOAD_UNKNOWN`` (404), ``RANGE_INVALID`` (416, with the current ``Range``),
``DIGEST_INVALID`` (400), ``SIZE_INVALID`` (413 over ``quayside.limits.max_blob_bytes``).
The HTTP handlers are in :mod:`origin.uploads`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from origin.metrics import OriginMetrics
from origin.quota import Quotas
from origin.quotameter import NO_METER, Meter, UploadDenied
from origin.repository import Repositories
from origin.uploadchunks import announced_size, append_chunk, hash_file, range_misfit, write_atomic
from origin.uploadstatus import UPLOAD_ID, range_error, valid_upload_id
from origin.uploadtimes import rfc3339, stale_sessions
from origin.writeguard import CommitHook, commit_scope
from regcore import errors
from regcore.digest import Digest, Hasher
from regcore.storage.blobstore import fsync_path
from regcore.storage.interfaces import BlobWriteStore
from regcore.storage.layout import Layout

log = logging.getLogger("quayside.origin.uploads")


@dataclass
class _Session:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    hasher: Hasher | None = None  # sha256 of data[0:hasher.size]; None until known


class Uploads:
    """Upload sessions of one origin. Safe for concurrent use by tasks of one event loop."""

    def __init__(
        self,
        layout: Layout,
        store: BlobWriteStore,
        repos: Repositories,
        *,
        metrics: OriginMetrics | None = None,
        clock: Callable[[], float] = time.time,
        max_blob_bytes: int = 0,
        commit_hook: CommitHook | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.layout = layout
        self.commit_hook = commit_hook
        self.quotas = quotas
        self.store = store
        self.repos = repos
        self.metrics = metrics if metrics is not None else OriginMetrics()
        self.clock = clock
        self.max_blob_bytes = max_blob_bytes
        self._sessions: dict[tuple[str, str], _Session] = {}

    # -- sessions --------------------------------------------------------------------------
    async def start(self, name: str) -> str:
        """Open a session for ``name``; returns its id."""
        upload_id = uuid.uuid4().hex
        started = rfc3339(self.clock())

        def _create() -> None:
            d = self.layout.upload_dir(name, upload_id)
            d.mkdir(parents=True, exist_ok=False)
            (d / "data").touch()
            write_atomic(d / "startedat", started)

        await asyncio.to_thread(_create)
        self._sessions[(name, upload_id)] = _Session(hasher=Hasher("sha256"))
        self.metrics.uploads_started.inc()
        return upload_id

    async def offset(self, name: str, upload_id: str) -> int:
        """Bytes received so far. Raises BlobUploadUnknown."""
        return await asyncio.to_thread(self._size, name, valid_upload_id(upload_id))

    def _size(self, name: str, upload_id: str) -> int:
        d = self.layout.upload_dir(name, upload_id)
        try:
            return os.stat(d / "data").st_size
        except (FileNotFoundError, NotADirectoryError):
            if d.is_dir():  # registry:2 creates data on the first write
                return 0
            raise errors.BlobUploadUnknown(upload_id) from None

    def in_use(self, name: str, upload_id: str) -> bool:
        """True while a PATCH/PUT/DELETE holds the session."""
        sess = self._sessions.get((name, upload_id))
        return sess is not None and sess.lock.locked()

    def _session(self, name: str, upload_id: str) -> _Session:
        key = (name, upload_id)
        sess = self._sessions.get(key)
        if sess is None:
            sess = self._sessions[key] = _Session()
        return sess

    async def _locked_size(self, name: str, upload_id: str) -> int:
        try:
            return await asyncio.to_thread(self._size, name, upload_id)
        except errors.BlobUploadUnknown:
            self._sessions.pop((name, upload_id), None)
            raise

    async def append(
        self,
        name: str,
        upload_id: str,
        body: AsyncIterable[bytes],
        *,
        start: int | None = None,
        end: int | None = None,
        length: int | None = None,
    ) -> int:
        """Append a chunk; returns the new offset.

        ``start``/``end`` come from ``Content-Range``: ``start`` must equal the current offset
        and ``length`` (Content-Length, when known) must equal ``end - start + 1``; otherwise
        RangeInvalid (416) with the current ``Range``. Raises BlobUploadUnknown, SizeTooLarge,
        and :class:`~origin.quotameter.UploadDenied` (403) when the namespace's quota cannot
        take the session's bytes: checked against ``length``/``end`` before reading, then per
        chunk; the session is cancelled then (its bytes dropped).
        """
        valid_upload_id(upload_id)
        sess = self._session(name, upload_id)
        async with sess.lock:
            offset = await self._locked_size(name, upload_id)
            if (mismatch := range_misfit(offset, start, end, length)) is not None:
                raise range_error(name, upload_id, offset, mismatch)
            announced = announced_size(offset, length, end)
            return await self._append_locked(sess, name, upload_id, offset, body, announced, None)

    async def _append_locked(
        self,
        sess: _Session,
        name: str,
        upload_id: str,
        offset: int,
        body: AsyncIterable[bytes],
        announced: int | None,
        digest: Digest | None,
    ) -> int:
        """Append ``body``; ``announced``: the size the session will have after it, when the
        client said so. ``digest``: the blob's, when known (closing PUT)."""
        limit = self.max_blob_bytes
        if limit and announced is not None and announced > limit:
            raise errors.SizeTooLarge(f"blob would exceed {limit} bytes")
        meter = await self._meter(name, upload_id, offset, digest)
        try:
            if announced is not None:
                meter.reserve(announced)  # refused before a byte of the body is read
            size = await self._append_metered(sess, name, upload_id, offset, body, meter)
        except UploadDenied:
            await self._remove(name, upload_id)
            self.metrics.uploads_cancelled.labels("quota").inc()
            raise
        except errors.RegistryError:
            meter.settle(offset)
            raise
        except BaseException:
            meter.settle()
            raise
        meter.settle(size)
        return size

    async def _meter(self, name: str, key: str, offset: int, digest: Digest | None) -> Meter:
        meter = None
        if self.quotas is not None:
            meter = await self.quotas.meter(name, key, offset=offset, digest=digest)
        return NO_METER if meter is None else meter

    async def _append_metered(
        self,
        sess: _Session,
        name: str,
        upload_id: str,
        offset: int,
        body: AsyncIterable[bytes],
        meter: Meter,
    ) -> int:
        path = self.layout.upload_data(name, upload_id)
        hasher = await self._hasher(sess, path, offset, "sha256")
        saved = hasher.copy()
        admit = None if meter is NO_METER else meter.check
        try:
            size = await append_chunk(
                self.store,
                path,
                hasher,
                body,
                offset=offset,
                limit=self.max_blob_bytes,
                admit=admit,
            )
        except errors.RegistryError:  # refused: the file was rolled back to ``offset``
            sess.hasher = saved
            raise
        except BaseException:  # client gone mid-chunk: the hash is rebuilt from disk next time
            sess.hasher = None
            raise
        sess.hasher = hasher
        self.metrics.upload_bytes.inc(size - offset)
        return size

    async def _hasher(self, sess: _Session, path: Path, size: int, algorithm: str) -> Hasher:
        h = sess.hasher
        if h is not None and h.size == size and h.algorithm == algorithm:
            return h
        h = await asyncio.to_thread(hash_file, path, algorithm)
        if algorithm == "sha256":
            sess.hasher = h
        return h

    async def finish(
        self,
        name: str,
        upload_id: str,
        digest: Digest,
        body: AsyncIterable[bytes] | None,
        length: int | None = None,
        *,
        start: int | None = None,
        end: int | None = None,
    ) -> Digest:
        """Append the final chunk (if any; ``start``/``end`` as in :meth:`append`), verify,
        commit, link. Raises DigestInvalid, BlobUploadUnknown, SizeTooLarge, RangeInvalid,
        UploadDenied (the body's bytes do not fit the quota: session cancelled) and DENIED
        (the commit does not fit the quota: session kept)."""
        valid_upload_id(upload_id)
        sess = self._session(name, upload_id)
        async with sess.lock:
            offset = await self._locked_size(name, upload_id)
            if (mismatch := range_misfit(offset, start, end, length)) is not None:
                raise range_error(name, upload_id, offset, mismatch)
            if body is not None:
                announced = announced_size(offset, length, end)
                offset = await self._append_locked(
                    sess, name, upload_id, offset, body, announced, digest
                )
            path = self.layout.upload_data(name, upload_id)
            hasher = await self._hasher(sess, path, offset, digest.algorithm)
            if hasher.digest() != digest:
                await self._remove(name, upload_id)
                self.metrics.uploads_cancelled.labels("digest_invalid").inc()
                raise errors.DigestInvalid({"expected": str(digest), "size": offset})
            await asyncio.to_thread(fsync_path, path)
            await self._commit(name, upload_id, digest, path, offset)
            await self._remove(name, upload_id)
        self.metrics.uploads_completed.inc()
        self.metrics.blobs_committed.labels("upload").inc()
        return digest

    async def _commit(
        self, name: str, upload_id: str, digest: Digest, path: Path, size: int
    ) -> None:
        # The commit's admission counts the bytes from here on: the session's upload charge
        # goes first (no double count), and comes back if the commit is refused (kept).
        if self.quotas is not None:
            self.quotas.in_flight.release(upload_id)
        try:
            async with commit_scope(self.commit_hook, name, digest, size):
                await self.store.install(path, digest)
                await self.repos.link_blob(name, digest)
        except errors.Denied:
            (await self._meter(name, upload_id, size, digest)).settle(size)
            raise

    async def cancel(self, name: str, upload_id: str) -> None:
        """Drop the session and its bytes. Raises BlobUploadUnknown."""
        valid_upload_id(upload_id)
        sess = self._session(name, upload_id)
        async with sess.lock:
            await self._locked_size(name, upload_id)
            await self._remove(name, upload_id)
        self.metrics.uploads_cancelled.labels("client").inc()

    async def _remove(self, name: str, upload_id: str) -> None:
        self._sessions.pop((name, upload_id), None)
        if self.quotas is not None:
            self.quotas.in_flight.release(upload_id)
        await asyncio.to_thread(shutil.rmtree, self.layout.upload_dir(name, upload_id), True)

    # -- single-request pushes ---------------------------------------------------------------
    async def put_monolithic(
        self, name: str, digest: Digest, body: AsyncIterable[bytes], length: int | None
    ) -> Digest:
        """POST ``?digest=`` with the whole blob. Raises DigestInvalid, SizeInvalid, SizeTooLarge,
        UploadDenied (quota: checked against ``length`` before reading, then per chunk)."""
        limit = self.max_blob_bytes
        if limit and length is not None and length > limit:
            raise errors.SizeTooLarge(f"blob exceeds {limit} bytes")
        meter = await self._meter(name, f"post-{uuid.uuid4().hex}", 0, digest)
        try:
            if length is not None:
                meter.reserve(length)  # refused before a byte of the body is read
            async with self.store.writer(digest.algorithm) as w:
                async for chunk in body:
                    if limit and w.size + len(chunk) > limit:
                        raise errors.SizeTooLarge(f"blob exceeds {limit} bytes")
                    meter.check(w.size + len(chunk))
                    await w.write(chunk)
                self.metrics.upload_bytes.inc(w.size)
                meter.release()  # the commit's admission counts the bytes from here on
                async with commit_scope(self.commit_hook, name, digest, w.size):
                    await w.commit(digest, length)
                    await self.repos.link_blob(name, digest)
        finally:
            meter.release()
        self.metrics.blobs_committed.labels("monolithic").inc()
        return digest

    async def mount(self, name: str, source: str, digest: Digest) -> bool:
        """Link ``digest`` from ``source`` into ``name``; False when ``source`` lacks it."""
        size = await self.store.stat(digest)
        if size is None or not await self.repos.blob_linked(source, digest):
            return False
        async with commit_scope(self.commit_hook, name, digest, size):
            if await self.store.stat(digest) is None:  # collected meanwhile
                return False
            await self.repos.link_blob(name, digest)
        self.metrics.blobs_mounted.inc()
        return True

    # -- maintenance -------------------------------------------------------------------------
    async def purge(self, older_than: float, *, dryrun: bool = False) -> list[tuple[str, str]]:
        """Remove sessions started more than ``older_than`` seconds ago and not in use.

        Returns the (name, id) pairs purged (or that would be, with ``dryrun``)."""
        now = self.clock()
        stale = await asyncio.to_thread(
            stale_sessions, self.layout.repositories, UPLOAD_ID, now - older_than
        )
        purged = []
        for name, upload_id in stale:
            if self.in_use(name, upload_id):
                continue
            purged.append((name, upload_id))
            if not dryrun:
                await self._remove(name, upload_id)
                self.metrics.uploads_cancelled.labels("purged").inc()
        if purged:
            log.info("purged stale uploads", extra={"count": len(purged), "dryrun": dryrun})
        return purged

    async def purge_loop(self, age: float, interval: float, *, dryrun: bool = False) -> None:
        """Purge now and then every ``interval`` seconds, until cancelled."""
        while True:
            try:
                await self.purge(age, dryrun=dryrun)
            except Exception:
                log.exception("upload purge failed")
            await asyncio.sleep(max(interval, 1.0))
