"""Appending one request's body to an upload session's ``data`` file (:func:`append_chunk`),
and the blocking file helpers of :mod:`origin.uploadsessions` (start times: :mod:`origin.uploadtimes`).

The body is received on the event loop while a dedicated thread writes and hashes what came
before (:meth:`regcore.storage.blobwriter.BlobWriter.pipeline`): receiving, writing and hashing
overlap instead of waiting on one another, with at most :data:`IN_FLIGHT` bytes received but
not yet written per request, and the file's dirty pages written back every
:data:`SYNC_EVERY` bytes in the background so the fsync of the closing PUT finds little left.

Guarantees of :func:`append_chunk` (the caller holds the session's lock throughout):

- Success: every byte of the body reached the file and the session's hasher, in order.
- Refused (a ``RegistryError`` such as SizeTooLarge or the quota meter's DENIED, raised
  while receiving, before the refused chunk is written): the writer
  thread is waited for, *then* the file is truncated back to where it was, so nothing the
  thread still held lands after the truncation.
- Any other failure (the client went away mid-body, cancellation, a write error): the writer
  thread is waited for before the error goes on, so the file no longer changes once the lock
  is released; what reached it stays (the session's offset says where to resume) and the
  hasher must be rebuilt from the file.

Cleanup runs to its end even when the task is cancelled meanwhile (the cancellation is
raised afterwards): it lasts as long as writing at most :data:`IN_FLIGHT` bytes.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable
from pathlib import Path

from regcore import errors
from regcore.digest import Hasher
from regcore.storage.blobwriter import BlobWriter
from regcore.storage.interfaces import BlobInstaller

IN_FLIGHT = 4 << 20  # bytes received but not yet written, per request
SYNC_EVERY = 32 << 20  # background writeback step of a session's data file
HASH_CHUNK = 1 << 20

__all__ = [
    "IN_FLIGHT",
    "SYNC_EVERY",
    "announced_size",
    "append_chunk",
    "hash_file",
    "range_misfit",
    "write_atomic",
]


async def append_chunk(
    store: BlobInstaller,
    path: Path,
    hasher: Hasher,
    body: AsyncIterable[bytes],
    *,
    offset: int,
    limit: int = 0,
    admit: Callable[[int], None] | None = None,
) -> int:
    """Append ``body`` to ``path`` (``offset`` bytes long, hashed by ``hasher``); returns the
    new size. ``limit`` (> 0) bounds the whole blob: SizeTooLarge beyond it. ``admit`` is
    called with the size the file is about to reach before each chunk is written (the quota
    meter); a ``RegistryError`` it raises refuses the chunk like SizeTooLarge. See the module
    docstring for what each outcome leaves behind; ``hasher`` is updated in place."""
    writer = BlobWriter(store, path, append=True, hasher=hasher)
    writer.pipeline(max_in_flight=IN_FLIGHT, sync_every=SYNC_EVERY)
    try:
        async for chunk in body:
            if limit and writer.size + len(chunk) > limit:
                raise errors.SizeTooLarge(f"blob would exceed {limit} bytes")
            if admit is not None:
                admit(writer.size + len(chunk))
            await writer.write(chunk)
        await writer.flush()
    except errors.RegistryError:
        await _to_the_end(_roll_back(writer, path, offset))
        raise
    except BaseException:
        await _to_the_end(_settle(writer))
        raise
    writer.close()
    return writer.size


async def _settle(writer: BlobWriter) -> None:
    await writer.settle()
    writer.close()


async def _roll_back(writer: BlobWriter, path: Path, offset: int) -> None:
    await _settle(writer)
    await asyncio.to_thread(os.truncate, path, offset)


async def _to_the_end(cleanup: Awaitable[None]) -> None:
    """Run ``cleanup`` to its end whatever cancellations arrive meanwhile; a cancellation
    that arrived is raised afterwards (chained to what is being handled)."""
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


# -- a chunk's Content-Range -----------------------------------------------------------------
def range_misfit(at: int, start: int | None, end: int | None, size: int | None) -> str | None:
    """Why a chunk's ``Content-Range`` (``start``-``end``) does not continue an upload at
    offset ``at`` or disagrees with its ``Content-Length`` ``size``; ``None`` when it fits."""
    if start is None or start != at:
        return None if start is None else f"chunk starts at {start}, upload is at {at}"
    if end is not None and size is not None and size != end - start + 1:
        return f"Content-Length {size} does not match Content-Range"
    return None


def announced_size(at: int, size: int | None, end: int | None) -> int | None:
    """The session's size after a chunk of ``Content-Length`` ``size`` / ``Content-Range``
    end ``end`` appended at offset ``at``, when the client said (checked before reading)."""
    return at + size if size is not None else None if end is None else end + 1


# -- disk helpers (blocking) --------------------------------------------------------------------
def hash_file(path: Path, algorithm: str) -> Hasher:
    """The hash of ``path``'s bytes (an empty hash when it does not exist)."""
    h = Hasher(algorithm)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
    except FileNotFoundError:
        pass
    return h


def write_atomic(path: Path, text: str) -> None:
    """``path`` holds ``text`` or its old content, never a mix (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)
