"""The fill's state machine: the only transitions a run can make, and what waiters see.

A :class:`edge.fillstate.Fill` changes state only through announce/open/advance/commit/fail;
anything out of order is a bug in the caller and raises at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.cache import CachedBlob
from edge.fill import FillFailed
from edge.fillrun import TOO_LARGE, TooLargeToCache
from edge.fillstate import Fill, FillState
from regcore import errors
from regcore.digest import Digest

DATA = b"x" * 1000
DIGEST = Digest.of(DATA)


async def test_a_fill_walks_pending_announced_streaming_committed(tmp_path: Path) -> None:
    fill = Fill(DIGEST)
    assert fill.state is FillState.PENDING and not fill.finished
    fill.announce(len(DATA))
    assert fill.state is FillState.ANNOUNCED and await fill.announced() == len(DATA)
    assert fill.total is None  # announced, not yet reserved
    fill.open(len(DATA), tmp_path / "temp")
    assert fill.state is FillState.STREAMING and await fill.size() == len(DATA)
    fill.advance(400)
    assert fill.written == 400
    blob = CachedBlob(DIGEST, tmp_path / "blob", len(DATA))
    fill.commit(blob)
    assert fill.state is FillState.COMMITTED and fill.written == len(DATA)
    assert await fill.result() == blob and fill.failure is None
    fill.advance(10)  # a late progress report changes nothing
    assert fill.written == len(DATA)


async def test_transitions_out_of_order_raise(tmp_path: Path) -> None:
    fill = Fill(DIGEST)
    with pytest.raises(RuntimeError):
        fill.open(len(DATA), tmp_path / "temp")  # not announced
    with pytest.raises(RuntimeError):
        fill.advance(1)  # no byte before the size is reserved
    fill.announce(len(DATA))
    with pytest.raises(RuntimeError):
        fill.announce(len(DATA))
    with pytest.raises(RuntimeError):
        fill.commit(CachedBlob(DIGEST, tmp_path / "blob", len(DATA)))  # not streaming
    fill.fail(OSError("cut"))
    with pytest.raises(RuntimeError):
        fill.fail(OSError("again"))
    with pytest.raises(RuntimeError):
        fill.commit(CachedBlob(DIGEST, tmp_path / "blob", len(DATA)))


async def test_failure_before_the_size_passes_the_oci_error_on_and_after_it_fillfailed(
    tmp_path: Path,
) -> None:
    early = Fill(DIGEST)
    early.announce(5 << 30)
    early.fail(TooLargeToCache(DIGEST, 5 << 30, TOO_LARGE))
    assert await early.announced() == 5 << 30  # announced before it failed
    with pytest.raises(TooLargeToCache):
        await early.size()
    with pytest.raises(TooLargeToCache):
        await early.result()
    assert isinstance(early.failure, TooLargeToCache) and early.state is FillState.FAILED

    unknown = Fill(DIGEST)
    unknown.fail(errors.BlobUnknown(str(DIGEST)))
    with pytest.raises(errors.BlobUnknown):
        await unknown.announced()

    late = Fill(DIGEST)
    late.announce(len(DATA))
    late.open(len(DATA), tmp_path / "temp")
    late.advance(10)
    late.fail(errors.DigestInvalid(str(DIGEST)))
    assert await late.size() == len(DATA)  # promised before the failure
    with pytest.raises(FillFailed):
        await late.result()
    with pytest.raises(FillFailed):
        async for _ in late.spans(0):
            pass
