"""Garbage collection against requests whose shared section spans the start of a collection.

A blob commit or manifest PUT holds the write guard in shared mode from its checks to its last
link. When that section began long ago (a slow commit, a loaded machine: longer than the grace
period) and writes its link only after the mark phase scanned the repository, the mark cannot
see the link and only the sweep's re-check can keep the blob: the request's touch must
therefore be taken when the section ends, not when it begins. The interleaving is forced with
events (the link write waits on a gate; the gate opens once the sweep waits for the lock), and
the section's length is simulated by moving the origin's clock past the grace period.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from harness.images import KiB, make_image
from origin import state

GRACE = 60.0


class ShiftedClock:
    """Wall-clock time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Interleaving:
    """Hold ``repos.<method>`` for ``repo`` until :attr:`release` is set, and notice when the
    sweep first asks for the exclusive lock."""

    def __init__(self, origin: Any, monkeypatch: Any, method: str, repo: str) -> None:
        self.entered = asyncio.Event()  # the request waits at its link write, lock held
        self.release = asyncio.Event()
        self.sweeping = asyncio.Event()  # a sweep batch asked for the exclusive lock
        repos = origin.client.app[state.REPOS]
        write: Callable[..., Any] = getattr(repos, method)

        async def gated(name: str, digest: Any) -> None:
            if name == repo:
                self.entered.set()
                await self.release.wait()
            await write(name, digest)

        monkeypatch.setattr(repos, method, gated)
        guard = origin.ops.guard
        exclusive = guard.exclusive

        def watched() -> Any:
            self.sweeping.set()
            return exclusive()

        monkeypatch.setattr(guard, "exclusive", watched)
        self.clock = ShiftedClock()
        monkeypatch.setattr(guard, "clock", self.clock)
        monkeypatch.setattr(origin.ops.gc, "clock", self.clock)

    async def collect_across(self, origin: Any) -> Any:
        """With the request inside its section: age the section past the grace period, run a
        collection whose mark misses the request's link, let the request finish while the
        first sweep batch waits, and return the collection's report."""
        await self.entered.wait()
        self.clock.offset = GRACE + 10.0  # the section started 70 s "ago"
        gc = asyncio.create_task(origin.gc(grace=GRACE))
        await self.sweeping.wait()
        self.release.set()
        return await gc


async def test_blob_commit_spanning_the_collection_start_keeps_its_blob(ops_origin, monkeypatch):
    """A re-upload of an old unreferenced layer (its bytes already stored, so its file time is
    old) links it into a new repository after the mark scanned that repository: the commit
    answered 201, so the layer is still there for the manifest that follows."""
    origin = await ops_origin()
    image = make_image(layer_sizes=(8 * KiB,), seed=300)
    [layer] = image.layers
    await origin.push("old/app", image, "v1")
    assert await origin.delete("old/app", image.digest) == 202
    origin.age_everything(7200)
    race = Interleaving(origin, monkeypatch, "link_blob", "new/app")

    upload = asyncio.create_task(origin.blob("new/app", layer.data))
    report = await race.collect_across(origin)
    assert await upload == layer.digest  # 201

    assert layer.digest not in {d for d, _ in report.blobs_deleted}
    assert origin.has_blob(layer.digest)
    assert report.spared >= 1
    # the old image's own garbage went: the collection did run its sweep
    assert image.digest in {d for d, _ in report.blobs_deleted}
    await origin.blob("new/app", image.config)
    resp = await origin.put_manifest("new/app", "v1", image.manifest, image.media_type)
    assert resp.status == 201, await resp.text()
    assert await origin.pull_ok("new/app", image, "v1")


async def test_manifest_put_spanning_the_collection_start_is_not_left_with_missing_blobs(
    ops_origin, monkeypatch
):
    """A manifest PUT re-pushes a deleted image whose blobs and layer links are old; it stores
    its revision after the mark scanned the repository and answers 201: the sweep that follows
    must keep the manifest, its links and its blobs (nothing stored points at a missing blob)."""
    origin = await ops_origin()
    image = make_image(layer_sizes=(8 * KiB, 8 * KiB), seed=310)
    await origin.push("team/app", image, "v1")
    assert await origin.delete("team/app", image.digest) == 202
    origin.age_everything(7200)
    race = Interleaving(origin, monkeypatch, "link_revision", "team/app")

    put = asyncio.create_task(
        origin.put_manifest("team/app", "v1", image.manifest, image.media_type)
    )
    report = await race.collect_across(origin)
    resp = await put
    assert resp.status == 201, await resp.text()

    assert report.blobs_deleted == [] and report.links_pruned == []
    assert report.spared >= 1
    assert await origin.pull_ok("team/app", image, "v1")
    assert await origin.pull_ok("team/app", image)
