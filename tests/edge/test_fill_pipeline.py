"""The fill's fast path: pipelined writer thread, file spans for sendfile, upstream pieces.

- :meth:`BlobWriter.pipeline` (the fill's writer): bytes land in order, hashed, progress is
  reported on the loop, write-ahead stays bounded, a discard mid-stream leaks nothing.
- :meth:`WritePipeline.absorb` (the socket path's thread side, fed by a scripted reader that
  also says "nothing now" and fails on cue): bytes and hash right, progress reported, a
  reader's error keeps what came before it (the next absorb resumes there), cancellation
  interrupts a waiting reader and outlasts the thread.
- :meth:`Fill.spans`: contiguous spans, the blob's tail withheld until the commit.
- Upstream reads hand over the connection's pieces (``readchunk``): chunked bodies and the
  ``chunk_size`` bound still hold.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from edge.cache import BlobCache
from edge.fill import FINAL_HOLD, FillManager
from edge.sources import BlobSource, HttpSource
from regcore.client import RegistryClient
from regcore.digest import Digest
from regcore.storage.absorb import REPORT_STEP
from regcore.storage.blobstore import FilesystemBlobStore
from regcore.storage.layout import Layout
from regcore.storage.writepipeline import WritePipeline
from tests.edge.conftest import span_bytes

KiB = 1024
MiB = 1024 * KiB


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` (bounded) until true; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- the pipelined BlobWriter -----------------------------------------------------------------


async def test_pipelined_writer_lands_every_byte_in_order_with_bounded_write_ahead(
    tmp_path: Path,
) -> None:
    store = FilesystemBlobStore(Layout(tmp_path))
    rng = random.Random(7)
    chunks = [os.urandom(rng.randint(1, 40 * KiB)) for _ in range(300)]
    data = b"".join(chunks)
    progress: list[int] = []
    limit = 256 * KiB
    w = store.writer()
    w.pipeline(max_in_flight=limit, on_written=progress.append, sync_every=512 * KiB)
    accepted = 0
    for chunk in chunks:
        await w.write(chunk)
        accepted += len(chunk)
        assert w.size == accepted
        assert w.size - w.written <= limit  # write-ahead bounded
    await w.flush()
    assert w.written == w.size == len(data)
    assert progress == sorted(set(progress)) and progress[-1] == len(data)
    assert 1 < len(progress) < len(chunks)  # batched, but not all at once
    assert w.path.read_bytes() == data
    digest = await w.commit(Digest.of(data), len(data))
    assert digest == Digest.of(data)
    assert store.path(digest).read_bytes() == data


async def test_pipelined_writer_refuses_wrong_bytes_and_discard_mid_stream_leaks_nothing(
    tmp_path: Path,
) -> None:
    store = FilesystemBlobStore(Layout(tmp_path))
    data = os.urandom(3 * MiB)
    before = open_fds()
    w = store.writer()
    w.pipeline(max_in_flight=8 * MiB, sync_every=256 * KiB)  # a background sync fd as well
    for at in range(0, len(data), 64 * KiB):
        await w.write(data[at : at + 64 * KiB])
    w.discard()  # batches may still be on the writer thread
    assert not w.path.exists()
    with pytest.raises(ValueError):
        await w.write(b"more")
    await eventually(lambda: open_fds() == before)

    w = store.writer()
    w.pipeline()
    await w.write(data)
    with pytest.raises(Exception, match="digest"):
        await w.commit(Digest.of(b"other bytes"), len(data))
    assert not w.path.exists() and list(store.iter_digests()) == []
    await eventually(lambda: open_fds() == before)


# -- WritePipeline.absorb ------------------------------------------------------------------------


class ScriptedReader:
    """Serves ``data`` in pieces of random size; every third call runs dry (nothing until
    ``wait``, like an empty socket); raises ``ConnectionResetError`` once ``fail_at`` bytes
    were served."""

    def __init__(self, data: bytes, *, seed: int = 5, fail_at: int | None = None) -> None:
        self.data, self.pos, self.fail_at = data, 0, fail_at
        self.rng = random.Random(seed)
        self.calls = self.waits = 0
        self.dry = False

    def read_into(self, view: memoryview) -> int:
        self.calls += 1
        if self.fail_at is not None and self.pos >= self.fail_at:
            raise ConnectionResetError("cut")
        self.dry = self.dry or self.calls % 3 == 0
        if self.dry:
            return 0
        n = min(len(view), self.rng.randint(1, 300 * KiB), len(self.data) - self.pos)
        view[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n

    def wait(self, want: int = 1) -> None:
        self.waits += 1
        self.dry = False


async def test_absorb_writes_and_hashes_every_byte_and_reports_progress(tmp_path: Path) -> None:
    data = os.urandom(5 * MiB + 77)
    path = tmp_path / "blob"
    path.touch()
    hasher = Digest.of(b"").hasher()
    reports: list[int] = []
    pipe = WritePipeline(os.open(path, os.O_WRONLY), hasher, 8 * MiB, reports.append, 2 * MiB)
    pipe.preallocate(len(data))  # disk reserved; the size still grows with the bytes
    await pipe.drain()
    assert path.stat().st_size == 0
    await pipe.write(data[:1000])  # queued bytes first, then absorbed ones
    reader = ScriptedReader(data[1000:])
    assert await pipe.absorb(reader, len(data) - 1000) == len(data) - 1000
    assert pipe.written == pipe.accepted == len(data) == hasher.size
    assert hasher.digest() == Digest.of(data)
    pipe.close()
    assert path.read_bytes() == data
    assert reports == sorted(set(reports)) and reports[-1] == len(data)
    assert reader.waits > 0 and len(reports) <= len(data) // REPORT_STEP + reader.waits + 2


async def test_absorb_keeps_what_came_before_a_reader_error_and_resumes_there(
    tmp_path: Path,
) -> None:
    data = os.urandom(4 * MiB)
    path = tmp_path / "blob"
    path.touch()
    hasher = Digest.of(b"").hasher()
    pipe = WritePipeline(os.open(path, os.O_WRONLY), hasher, 8 * MiB, None, 0)
    with pytest.raises(ConnectionResetError):
        await pipe.absorb(ScriptedReader(data, fail_at=1536 * KiB), len(data))
    cut = pipe.written
    assert 1536 * KiB <= cut < len(data) and hasher.size == cut == pipe.accepted
    await pipe.absorb(ScriptedReader(data[cut:], seed=9), len(data) - cut)  # "resumed"
    await pipe.drain()
    assert hasher.digest() == Digest.of(data) and pipe.written == len(data)
    pipe.close()
    assert path.read_bytes() == data


async def test_cancelled_absorb_interrupts_the_waiting_reader_and_outlasts_the_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "blob"
    path.touch()
    woken = threading.Event()
    ended = threading.Event()

    class Silent:
        def read_into(self, view: memoryview) -> int:
            if woken.is_set():
                raise OSError("interrupted")
            return 0

        def wait(self, want: int = 1) -> None:
            woken.wait(10)  # a silent socket, until interrupt() wakes it

    hasher = Digest.of(b"").hasher()
    pipe = WritePipeline(os.open(path, os.O_WRONLY), hasher, 8 * MiB, None, 0)
    reader = Silent()
    original = reader.read_into

    def read_into(view: memoryview) -> int:
        try:
            return original(view)
        except OSError:
            ended.set()
            raise

    reader.read_into = read_into  # type: ignore[method-assign]
    task = asyncio.create_task(pipe.absorb(reader, 1 * MiB, interrupt=woken.set))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert woken.is_set() and ended.is_set()  # interrupted, and the thread was done first
    assert pipe.written == 0
    pipe.close()


# -- Fill.spans ---------------------------------------------------------------------------------


class HeldEndSource:
    """Serves every byte at once, then holds its stream open (no commit) until ``gate``."""

    description = "upstream"

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.gate = asyncio.Event()

    async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]:
        return len(self.data), self._chunks(offset)

    async def _chunks(self, offset: int) -> AsyncIterator[bytes]:
        for at in range(offset, len(self.data), 128 * KiB):
            yield self.data[at : at + 128 * KiB]
        await self.gate.wait()


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[BlobCache]:
    c = BlobCache(tmp_path / "cache", 64 * MiB)
    await c.open()
    yield c
    await c.close()


def no_peers(url: str, digest: Digest) -> BlobSource:
    raise AssertionError("no region configured")


async def test_spans_are_contiguous_and_withhold_the_tail_until_the_commit(
    cache: BlobCache,
) -> None:
    data = os.urandom(2 * MiB + 777)
    source = HeldEndSource(data)
    fm = FillManager(cache, region=None, advertise_url=None, peer_source=no_peers)
    fill = await fm.get(Digest.of(data), lambda: source)
    got = bytearray()
    finished_at_yield: list[bool] = []

    async def reader() -> None:
        async for fd, offset, count in fill.spans():
            assert offset == len(got) and count > 0
            got.extend(span_bytes(fill, fd, offset, count))
            finished_at_yield.append(fill.finished)

    task = asyncio.create_task(reader())
    await eventually(lambda: len(got) == len(data) - FINAL_HOLD)
    await asyncio.sleep(0.05)  # every byte is written, the stream is held open: no commit
    assert fill.written == len(data) and not fill.finished
    assert len(got) == len(data) - FINAL_HOLD
    source.gate.set()
    await asyncio.wait_for(task, 5)
    assert bytes(got) == data
    assert finished_at_yield[-1] and not any(finished_at_yield[:-1])
    mid = [span async for span in fill.spans(1000, 5000)]  # a range of a committed fill
    assert [(offset, count) for _, offset, count in mid] == [(1000, 4001)]
    await fm.close()


# -- upstream pieces ----------------------------------------------------------------------------


async def test_upstream_reads_take_chunked_bodies_and_keep_the_chunk_size_bound(
    cache: BlobCache,
) -> None:
    data = os.urandom(1 * MiB + 3)
    digest = Digest.of(data)

    async def blob(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if request.path.startswith("/v2/") or request.query.get("chunked"):
            resp.enable_chunked_encoding()  # no Content-Length: BlobStream reads to the end
        else:
            resp.content_length = len(data)
        await resp.prepare(request)
        for at in range(0, len(data), 5000):  # many small HTTP chunks
            await resp.write(data[at : at + 5000])
        return resp

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v2/", ping)
    app.router.add_get("/v2/team/app/blobs/{digest}", blob)
    app.router.add_get("/blob", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            async with RegistryClient(base, session=session) as client:
                pieces = [
                    piece
                    async for piece in client.blob_stream(
                        "team/app", str(digest), chunk_size=1000, verify=True
                    )
                ]
                assert b"".join(pieces) == data
                assert max(map(len, pieces)) <= 1000
            fm = FillManager(cache, region=None, advertise_url=None, peer_source=no_peers)
            fill = await fm.get(digest, lambda: HttpSource(session, f"{base}/blob"))
            assert (await fill.result()).path.read_bytes() == data
            await fm.close()
            source = HttpSource(session, f"{base}/blob?chunked=1")
            with pytest.raises(Exception, match="Content-Length"):
                await source.open(0)
            total, chunks = await HttpSource(session, f"{base}/blob").open(10)
            assert total == len(data)
            assert b"".join([c async for c in chunks]) == data[10:]
    finally:
        await runner.cleanup()
