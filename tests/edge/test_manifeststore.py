"""ManifestStore: one record (media type + bytes) per digest; memory before a real diskcache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import diskcache
import pytest

from edge.manifeststore import ManifestDisk, ManifestRecord, ManifestStore, disk_share

OCI = "application/vnd.oci.image.manifest.v1+json"
KiB = 1024


def _record(body: bytes, media_type: str = OCI) -> ManifestRecord:
    return ManifestRecord("sha256:" + hashlib.sha256(body).hexdigest(), media_type, body)


async def test_record_survives_a_reopen_with_its_media_type(tmp_path: Path) -> None:
    rec = _record(b'{"schemaVersion":2}')
    store = ManifestStore(tmp_path / "m", disk_bytes=1024 * KiB, memory_bytes=1024 * KiB)
    await store.open()
    await store.put(rec)
    assert await store.get(rec.digest) == (rec, "memory")
    await store.close()

    reopened = ManifestStore(tmp_path / "m", disk_bytes=1024 * KiB, memory_bytes=1024 * KiB)
    await reopened.open()
    try:
        assert await reopened.get(rec.digest, remember=False) == (rec, "disk")
        assert rec.digest not in reopened.memory  # a HEAD does not fill memory
        assert await reopened.get(rec.digest) == (rec, "disk")
        assert await reopened.get(rec.digest) == (rec, "memory")
        assert reopened.memory_bytes_used() == len(rec.body)
    finally:
        await reopened.close()


async def test_a_record_that_does_not_hash_to_its_digest_reads_as_a_miss_and_is_dropped(
    tmp_path: Path,
) -> None:
    rec = _record(b'{"schemaVersion":2,"layers":[]}')
    disk = ManifestDisk(tmp_path / "m", 1024 * KiB)
    await disk.open()
    try:
        await disk.put(rec)
        assert await disk.get(rec.digest) == rec
        # another writer (a damaged disk) changes the stored bytes under the same key
        with diskcache.Cache(str(tmp_path / "m")) as raw:
            raw.set(rec.digest, OCI.encode() + b"\n" + rec.body + b" ")
            raw.set("sha256:" + "0" * 64, b"no line break")
        assert await disk.get(rec.digest) is None
        assert await disk.get("sha256:" + "0" * 64) is None
        with diskcache.Cache(str(tmp_path / "m")) as raw:
            assert rec.digest not in raw and "sha256:" + "0" * 64 not in raw
    finally:
        await disk.close()


async def test_disk_keeps_the_most_recently_used_records_within_its_bound(
    tmp_path: Path,
) -> None:
    bound = 512 * KiB
    disk = ManifestDisk(tmp_path / "m", bound)
    await disk.open()
    records = [_record(bytes([i]) * (40 * KiB)) for i in range(40)]  # 1.6 MiB in all
    try:
        await disk.put(records[0])
        for rec in records[1:]:
            await disk.put(rec)
            assert await disk.get(records[0].digest) == records[0]  # kept recently used
        kept = [r for r in records if await disk.get(r.digest) is not None]
        assert records[0] in kept and records[-1] in kept
        assert len(kept) < len(records) // 2
        with diskcache.Cache(str(tmp_path / "m")) as raw:
            assert raw.volume() <= bound + 40 * KiB  # at most one record over, until its cull
    finally:
        await disk.close()


async def test_media_type_with_a_line_break_is_refused(tmp_path: Path) -> None:
    disk = ManifestDisk(tmp_path / "m", 1024 * KiB)
    await disk.open()
    try:
        with pytest.raises(ValueError):
            await disk.put(_record(b"x", "a/b\nc"))
    finally:
        await disk.close()


def test_disk_share_is_a_sixteenth_of_the_cache_at_most_256_mib() -> None:
    assert disk_share(16 * 1024 * KiB) == 1024 * KiB
    assert disk_share(10 * 1024**3) == 256 * 1024 * KiB
