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
- Upload ids are uuid4 (hex, or dashed as registry:2 writes them); anything else is
  ``BLOB_UPLOAD_UNKNOWN`` and never reaches a path.

Errors: ``BLOB_UPLOAD_UNKNOWN`` (404), ``RANGE_INVALID`` (416, with the current ``Range``),
``DIGEST_INVALID`` (400), ``SIZE_INVALID`` (413 over ``quayside.limits.max_blob_bytes``).
The HTTP handlers are in :mod:`origin.uploads`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import hdrs

from origin.metrics import OriginMetrics
from origin.repository import Repositories
from origin.uploadchunks import append_chunk, hash_file, write_atomic
from origin.uploadtimes import rfc3339, started_at
from origin.writeguard import CommitHook, commit_scope
from regcore import errors
from regcore.digest import Digest, Hasher
from regcore.storage.blobstore import fsync_path
from regcore.storage.interfaces import BlobWriteStore
from regcore.storage.layout import Layout

log = logging.getLogger("quayside.origin.uploads")

_ID_RE = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class _Session:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    hasher: Hasher | None = None  # sha256 of data[0:hasher.size]; None until known


def valid_upload_id(upload_id: str) -> str:
    """``upload_id`` if it is a uuid; raises BlobUploadUnknown otherwise."""
    if not _ID_RE.fullmatch(upload_id or ""):
        raise errors.BlobUploadUnknown(message="blob upload unknown to registry")
    return upload_id


def range_value(offset: int) -> str:
    """The ``Range`` header for ``offset`` bytes received (``0-0`` when empty, as registry:2)."""
    return f"0-{max(offset - 1, 0)}"


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
    ) -> None:
        self.layout = layout
        self.commit_hook = commit_hook
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
        RangeInvalid (416) with the current ``Range``. Raises BlobUploadUnknown, SizeTooLarge.
        """
        valid_upload_id(upload_id)
        sess = self._session(name, upload_id)
        async with sess.lock:
            offset = await self._locked_size(name, upload_id)
            if (mismatch := _range_misfit(offset, start, end, length)) is not None:
                raise self.range_error(name, upload_id, offset, mismatch)
            return await self._append_locked(sess, name, upload_id, offset, body, length)

    async def _append_locked(
        self,
        sess: _Session,
        name: str,
        upload_id: str,
        offset: int,
        body: AsyncIterable[bytes],
        length: int | None,
    ) -> int:
        limit = self.max_blob_bytes
        if limit and length is not None and offset + length > limit:
            raise errors.SizeTooLarge(f"blob would exceed {limit} bytes")
        path = self.layout.upload_data(name, upload_id)
        hasher = await self._hasher(sess, path, offset, "sha256")
        saved = hasher.copy()
        try:
            size = await append_chunk(self.store, path, hasher, body, offset=offset, limit=limit)
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

    def range_error(
        self, name: str, upload_id: str, offset: int, detail: str
    ) -> errors.RegistryError:
        """A 416 RANGE_INVALID that tells the client where the upload stands."""
        return errors.RangeInvalid(detail, headers=self.headers(name, upload_id, offset))

    def headers(self, name: str, upload_id: str, offset: int) -> dict[str, str]:
        return {
            hdrs.LOCATION: f"/v2/{name}/blobs/uploads/{upload_id}",
            hdrs.RANGE: range_value(offset),
            "Docker-Upload-UUID": upload_id,
        }

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
        commit, link. Raises DigestInvalid, BlobUploadUnknown, SizeTooLarge, RangeInvalid."""
        valid_upload_id(upload_id)
        sess = self._session(name, upload_id)
        async with sess.lock:
            offset = await self._locked_size(name, upload_id)
            if (mismatch := _range_misfit(offset, start, end, length)) is not None:
                raise self.range_error(name, upload_id, offset, mismatch)
            if body is not None:
                offset = await self._append_locked(sess, name, upload_id, offset, body, length)
            path = self.layout.upload_data(name, upload_id)
            hasher = await self._hasher(sess, path, offset, digest.algorithm)
            if hasher.digest() != digest:
                await self._remove(name, upload_id)
                self.metrics.uploads_cancelled.labels("digest_invalid").inc()
                raise errors.DigestInvalid({"expected": str(digest), "size": offset})
            await asyncio.to_thread(fsync_path, path)
            async with commit_scope(self.commit_hook, name, digest, offset):
                await self.store.install(path, digest)
                await self.repos.link_blob(name, digest)
            await self._remove(name, upload_id)
        self.metrics.uploads_completed.inc()
        self.metrics.blobs_committed.labels("upload").inc()
        return digest

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
        await asyncio.to_thread(shutil.rmtree, self.layout.upload_dir(name, upload_id), True)

    # -- single-request pushes ---------------------------------------------------------------
    async def put_monolithic(
        self, name: str, digest: Digest, body: AsyncIterable[bytes], length: int | None
    ) -> Digest:
        """POST ``?digest=`` with the whole blob. Raises DigestInvalid, SizeInvalid, SizeTooLarge."""
        limit = self.max_blob_bytes
        if limit and length is not None and length > limit:
            raise errors.SizeTooLarge(f"blob exceeds {limit} bytes")
        async with self.store.writer(digest.algorithm) as w:
            async for chunk in body:
                if limit and w.size + len(chunk) > limit:
                    raise errors.SizeTooLarge(f"blob exceeds {limit} bytes")
                await w.write(chunk)
            self.metrics.upload_bytes.inc(w.size)
            async with commit_scope(self.commit_hook, name, digest, w.size):
                await w.commit(digest, length)
                await self.repos.link_blob(name, digest)
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
        stale = await asyncio.to_thread(self._stale, now - older_than)
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

    def _stale(self, cutoff: float) -> list[tuple[str, str]]:
        root = self.layout.repositories
        out: list[tuple[str, str]] = []
        for dirpath, dirnames, _ in os.walk(root):
            if "_uploads" in dirnames:
                name = os.path.relpath(dirpath, root).replace(os.sep, "/")
                uploads = Path(dirpath) / "_uploads"
                with contextlib.suppress(OSError):
                    for entry in os.scandir(uploads):
                        if _ID_RE.fullmatch(entry.name) and started_at(Path(entry.path)) < cutoff:
                            out.append((name, entry.name))
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        return out

    async def purge_loop(self, age: float, interval: float, *, dryrun: bool = False) -> None:
        """Purge now and then every ``interval`` seconds, until cancelled."""
        while True:
            try:
                await self.purge(age, dryrun=dryrun)
            except Exception:
                log.exception("upload purge failed")
            await asyncio.sleep(max(interval, 1.0))


def _range_misfit(at: int, start: int | None, end: int | None, size: int | None) -> str | None:
    """Why a chunk's ``Content-Range`` (``start``-``end``) does not continue an upload at
    offset ``at`` or disagrees with its ``Content-Length`` ``size``; ``None`` when it fits."""
    if start is None or start != at:
        return None if start is None else f"chunk starts at {start}, upload is at {at}"
    if end is not None and size is not None and size != end - start + 1:
        return f"Content-Length {size} does not match Content-Range"
    return None
