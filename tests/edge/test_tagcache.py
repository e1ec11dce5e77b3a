"""The tag cache's node-local memory (:class:`edge.tagcache.LocalTags`) and the memory-only
:class:`edge.tagcache.TagCache`: entries outlive the TTL as the last known answer, expire
``keep`` seconds after their last write, and expired ones do not stay in memory."""

from __future__ import annotations

from edge.tagcache import SWEEP_INTERVAL, LocalTags, TagCache, TagEntry
from tests.edge.conftest import FakeClock

ENTRY = TagEntry("sha256:" + "a" * 64, "application/vnd.oci.image.manifest.v1+json", 512, 0.0)


def test_an_entry_lives_keep_seconds_after_its_last_write() -> None:
    clock = FakeClock()
    tags = LocalTags(keep=100.0, clock=clock)
    tags.set("hub/team/app:1", ENTRY)
    clock.advance(99.0)
    assert tags.get("hub/team/app:1") == ENTRY
    tags.set("hub/team/app:1", ENTRY)  # a rewrite starts the time again
    clock.advance(99.0)
    assert tags.get("hub/team/app:1") == ENTRY
    clock.advance(1.0)
    assert tags.get("hub/team/app:1") is None
    assert len(tags) == 0  # the expired entry went on the read


def test_expired_entries_nobody_reads_are_swept_on_a_later_write() -> None:
    clock = FakeClock()
    tags = LocalTags(keep=10.0, clock=clock)
    for i in range(50):
        tags.set(f"hub/team/app:{i}", ENTRY)
    clock.advance(SWEEP_INTERVAL)
    tags.set("hub/team/app:new", ENTRY)
    assert len(tags) == 1
    assert tags.get("hub/team/app:new") == ENTRY


def test_delete_and_clear() -> None:
    tags = LocalTags(keep=10.0, clock=FakeClock())
    tags.set("a", ENTRY)
    tags.set("b", ENTRY)
    tags.delete("a")
    tags.delete("never-there")
    assert tags.get("a") is None and tags.get("b") == ENTRY
    tags.clear()
    assert len(tags) == 0


async def test_a_stale_entry_is_still_the_last_known_answer() -> None:
    clock = FakeClock()
    cache = TagCache(ttl=60.0, clock=clock)
    entry = cache.entry(ENTRY.digest, ENTRY.media_type, ENTRY.size)
    await cache.put("hub", "team/app", "1", entry)
    got = await cache.get("hub", "team/app", "1")
    assert got == entry and cache.fresh(got)
    clock.advance(61.0)
    got = await cache.get("hub", "team/app", "1")
    assert got == entry and not cache.fresh(got)  # stale, kept to serve when upstream fails
    await cache.delete("hub", "team/app", "1")
    assert await cache.get("hub", "team/app", "1") is None
    await cache.close()
