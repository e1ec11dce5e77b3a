"""What the servers need from a blob store: small one-capability protocols, composed.

Handlers and services are typed with these, never with a concrete store, so another backend
(object storage) can be added without touching them. Each capability is one
:class:`~typing.Protocol` (runtime-checkable, so a test can ask ``isinstance``); the
composites name what one role needs::

    BlobStatter     stat(digest) -> size | None
    BlobReader      read_bytes(digest, limit)            whole small blobs (manifests)
    BlobLocator     locate(digest) -> BlobFile | None    a local file to send (sendfile)
    BlobInstaller   install(temp, digest)                adopt a verified local file
    BlobIngester    + writer() / put_bytes / put_stream  verified commit of new bytes
    BlobDeleter     delete(digest)
    BlobEnumerator  iter_digests()                       walk every blob (GC, cache rebuild)
    BlobRecoverer   recover()                            drop what a crash left behind
    LocalBlobFiles  path / file / detach / touch         blobs as files on this machine

    BlobReadStore   = Statter + Reader + Locator                    serving (origin GETs)
    BlobWriteStore  = Statter + Ingester                            pushing (uploads, PUTs)
    BlobStore       = ReadStore + WriteStore + Deleter + Enumerator + Recoverer   (origin)
    LocalBlobStore  = Ingester (staged writers) + Enumerator + Recoverer + LocalBlobFiles
                      (the edge's cache: fills are tailed while written, hits go by sendfile)

Contract every implementation keeps (``tests/regcore/test_store_contract.py`` runs it over
each one):
- Only complete, verified bytes are ever visible under a digest: a commit checks digest and
  size first (``DIGEST_INVALID`` / ``SIZE_INVALID``, nothing left behind), then moves the
  bytes into place atomically.
- Committing a digest that already exists is success (equal names mean equal bytes);
  concurrent commits of one digest are safe.
- ``stat``/``locate`` answer ``None`` for an absent blob; ``read_bytes`` raises
  ``BLOB_UNKNOWN`` (and ``SIZE_TOO_LARGE`` past ``limit``); ``delete`` answers whether it
  removed something.
- After a crash, a store reopened on the same place serves every committed blob, and
  ``recover`` removes every partial write.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

from regcore.digest import Digest

if TYPE_CHECKING:
    from regcore.storage.absorb import Reader


@dataclass(frozen=True, slots=True)
class BlobFile:
    """A complete, verified blob as a file on this machine: send ``path`` (sendfile) with
    ``size`` as Content-Length. The file may be removed later (eviction, GC): a reader that
    opened it keeps working; one that opens it too late gets ``FileNotFoundError``."""

    digest: Digest
    path: Path
    size: int


# -- writers ---------------------------------------------------------------------------------
@runtime_checkable
class BlobSink(Protocol):
    """A blob being written: bytes appended and hashed, then committed under their digest or
    discarded. Not safe for concurrent use by several tasks. Leaving ``async with`` without a
    commit discards."""

    @property
    def size(self) -> int:
        """Bytes accepted so far."""
        ...

    async def write(self, chunk: bytes | bytearray | memoryview) -> None: ...

    async def commit(self, expected: Digest | None = None, size: int | None = None) -> Digest:
        """Verify against ``expected``/``size`` and make the blob visible atomically. Returns
        the digest. Raises DigestInvalid / SizeInvalid (nothing left behind)."""
        ...

    def discard(self) -> None:
        """Drop what was written. Idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...


@runtime_checkable
class StagedBlob(BlobSink, Protocol):
    """A blob written to a local staging file that other readers may tail while it grows:
    bytes ``0..written`` of ``path`` are final. ``pipeline`` moves writing and hashing to a
    dedicated thread (see :meth:`regcore.storage.blobwriter.BlobWriter.pipeline`); after it,
    ``absorb`` lets that thread read the bytes itself (the edge's fills, from a socket), the
    newest of them readable from memory (``locate``) before they reach ``path``."""

    path: Path

    @property
    def written(self) -> int:
        """Bytes that reached ``path`` (visible to readers)."""
        ...

    def pipeline(
        self,
        *,
        max_in_flight: int = ...,
        on_written: Callable[[int], None] | None = None,
        sync_every: int = ...,
        direct_io: bool = ...,
    ) -> None: ...

    def locate(self, pos: int, stop: int) -> tuple[memoryview | None, int]:
        """Where readable bytes ``pos..stop-1`` are: live in memory (a view valid until the
        next ``await``) or in ``path`` up to an offset (:meth:`regcore.storage.
        writepipeline.WritePipeline.locate`)."""
        ...

    def preallocate(self, size: int) -> None:
        """After ``pipeline``: reserve room for ``size`` bytes (best effort)."""
        ...

    def follow(self, need: Callable[[int], int | None]) -> None:
        """After ``pipeline``: ``need(floor)`` is the lowest offset from ``floor`` on that
        a reader of the live bytes still has to send (None: no reader there); an absorb keeps those bytes in memory a little
        while for it (:meth:`regcore.storage.writepipeline.WritePipeline.follow`)."""
        ...

    def readers_moved(self) -> None:
        """A reader of ``follow`` sent more or left."""
        ...

    @property
    def holdbacks_ended(self) -> int:
        """Absorbs so far whose hold-back ran out: a reader was too slow to wait for."""
        ...

    async def absorb(
        self, reader: Reader, count: int, *, interrupt: Callable[[], None] | None = None
    ) -> int:
        """After ``pipeline``: ``count`` bytes from a blocking ``reader`` (a socket), received,
        written and hashed off the event loop (:meth:`regcore.storage.writepipeline.
        WritePipeline.absorb`)."""
        ...

    async def flush(self) -> None: ...

    async def verify(self, expected: Digest | None = None, size: int | None = None) -> Digest: ...

    def close(self) -> None: ...


# -- one capability each ---------------------------------------------------------------------
@runtime_checkable
class BlobStatter(Protocol):
    async def stat(self, digest: Digest) -> int | None:
        """The committed blob's size, or None when absent."""
        ...


@runtime_checkable
class BlobReader(Protocol):
    async def read_bytes(self, digest: Digest, limit: int | None = None) -> bytes:
        """The whole blob in memory (manifests). Raises BlobUnknown / SizeTooLarge."""
        ...


@runtime_checkable
class BlobLocator(Protocol):
    async def locate(self, digest: Digest) -> BlobFile | None:
        """The committed blob as a local file to send, or None when absent."""
        ...


@runtime_checkable
class BlobInstaller(Protocol):
    async def install(self, temp: Path, digest: Digest) -> bool:
        """Adopt ``temp`` (a local file already verified against ``digest`` and fsynced) as
        the blob ``digest``; ``temp`` is consumed either way. Atomic. Returns False when the
        blob already existed (success all the same)."""
        ...


@runtime_checkable
class BlobIngester(BlobInstaller, Protocol):
    def writer(self, algorithm: str = "sha256") -> BlobSink:
        """A sink for a new blob hashed with ``algorithm``."""
        ...

    async def put_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        """Commit ``data`` (verified against ``expected``). Raises DigestInvalid."""
        ...

    async def put_stream(
        self, chunks: AsyncIterable[bytes], expected: Digest | None = None, size: int | None = None
    ) -> Digest:
        """Commit a stream (verified). Raises DigestInvalid / SizeInvalid."""
        ...


@runtime_checkable
class BlobDeleter(Protocol):
    async def delete(self, digest: Digest) -> bool:
        """Remove the blob; True if it was there. Readers that already opened it keep going."""
        ...


@runtime_checkable
class BlobEnumerator(Protocol):
    def iter_digests(self) -> Iterator[tuple[Digest, int, float]]:
        """Every committed blob: (digest, size, last access or modification time). Blocking:
        iterate in a worker thread."""
        ...


@runtime_checkable
class BlobRecoverer(Protocol):
    def recover(self) -> int:
        """Remove partial writes a crash left behind; returns how many. Blocking: call in a
        worker thread, at start-up, before the first write."""
        ...


@runtime_checkable
class LocalBlobFiles(Protocol):
    """Blobs that are files on this machine. Every call is quick (at most one stat, rename or
    utime) and blocking, except :meth:`remove_detached`, which belongs in a worker thread."""

    def path(self, digest: Digest) -> Path:
        """Where the committed blob's file is, whether or not it exists now. No I/O."""
        ...

    def file(self, digest: Digest) -> BlobFile | None:
        """The committed blob with its size on disk now (one stat), or None when absent."""
        ...

    def detach(self, digest: Digest) -> Path | None:
        """Move the blob's file out of the blob tree at once (one rename), so the digest is
        absent from now on and a later commit of it is never hit by a late unlink; open
        descriptors keep working. Returns the detached file (for :meth:`remove_detached`),
        or None when there was none."""
        ...

    def remove_detached(self, detached: Path, digest: Digest) -> None:
        """Unlink a detached file and prune the blob's directory if empty. Blocking."""
        ...

    def touch(self, digest: Digest, atime: float) -> None:
        """Record ``atime`` as the blob file's access time (recency that survives the loss of
        an index); a missing file is ignored."""
        ...


# -- what each role needs --------------------------------------------------------------------
@runtime_checkable
class BlobReadStore(BlobStatter, BlobReader, BlobLocator, Protocol):
    """What serving blobs and manifests needs."""


@runtime_checkable
class BlobWriteStore(BlobStatter, BlobIngester, Protocol):
    """What accepting pushes needs (uploads, manifest PUTs)."""


@runtime_checkable
class BlobStore(
    BlobReadStore, BlobWriteStore, BlobDeleter, BlobEnumerator, BlobRecoverer, Protocol
):
    """Everything the origin wires: one store serves, ingests, deletes, walks and recovers."""


@runtime_checkable
class LocalBlobStore(BlobIngester, BlobEnumerator, BlobRecoverer, LocalBlobFiles, Protocol):
    """What the edge's cache needs: staged writers (tailed by fill readers while written),
    files for sendfile, a synchronous detach for eviction, and a walk for recovery."""

    def writer(self, algorithm: str = "sha256", *, flush_bytes: int = ...) -> StagedBlob:
        """A staging file under the store's temp area, flushed every ``flush_bytes``."""
        ...
