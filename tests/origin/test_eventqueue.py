"""The on-disk event queue and its worker: order, bound, one worker per directory, retries."""

from __future__ import annotations

import asyncio
from pathlib import Path

from origin.notifications.queue import DiskQueue
from origin.notifications.worker import QueueWorker


def test_items_come_back_in_order_and_the_bound_drops_new_items(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q", maxpending=3)
    assert q.put([b"1", b"2"]) == 0
    assert q.put([b"3", b"4", b"5"], sync=True) == 2
    assert [q.read(p) for p in q.pending()] == [b"1", b"2", b"3"]
    assert len(q) == 3
    q.remove(q.pending()[0])
    q.remove(tmp_path / "q" / "gone.json")  # idempotent
    assert [q.read(p) for p in q.pending()] == [b"2", b"3"]
    again = DiskQueue(tmp_path / "q", maxpending=3)  # a restart sees what is pending
    assert len(again) == 2 and [again.read(p) for p in again.pending()] == [b"2", b"3"]
    assert not list((tmp_path / "q").glob(".tmp-*"))


def test_one_worker_per_directory(tmp_path: Path) -> None:
    a, b = DiskQueue(tmp_path / "q", 10), DiskQueue(tmp_path / "q", 10)
    assert a.lock() and not b.lock()
    a.unlock()
    assert b.lock()
    b.unlock()


async def test_worker_retries_the_head_item_then_goes_on_in_order(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q", 10)
    q.put([b"a", b"b", b"c"])
    seen: list[bytes] = []
    failures = {"n": 3}

    async def handle(item: bytes) -> None:
        seen.append(item)
        if item == b"b" and failures["n"] > 0:
            failures["n"] -= 1
            raise ConnectionError("receiver down")

    outcomes: list[str] = []
    worker = QueueWorker(
        "t", q, handle, threshold=2, backoff=0.05, retry_delay=0.01, poll=0.05,
        on_outcome=lambda result, _: outcomes.append(result),
    )  # fmt: skip
    worker.start()
    for _ in range(200):
        if not q.pending():
            break
        await asyncio.sleep(0.02)
    await worker.close()
    assert seen == [b"a", b"b", b"b", b"b", b"b", b"c"]
    assert outcomes.count("failed") == 3 and outcomes.count("ok") == 3
    assert q.pending() == []


async def test_pulls_are_batched_in_memory_and_written_by_a_graceful_close(tmp_path: Path) -> None:
    import json

    from origin.notifications.events import SourceRecord, Target, make_event
    from origin.notifications.hub import EventHub
    from regcore.eventsconfig import EndpointConfig, NotificationsConfig

    directory = tmp_path / "n"
    config = NotificationsConfig(
        endpoints=(EndpointConfig("x", "http://127.0.0.1:9/", backoff=60.0, threshold=1),),
        directory=str(directory),
    )
    hub = EventHub(config, flush_interval=30.0)  # only size and close trigger a write here
    hub.start()
    source = SourceRecord("h:1", "i")

    def event(action: str) -> dict[str, object]:
        return make_event(
            action, Target("r", digest="sha256:" + "0" * 64), request=None, actor="", source=source
        )

    await hub.emit([event("pull") for _ in range(50)])
    assert not list((directory / "x").glob("*.json"))  # no disk write per pull
    await hub.emit([event("push")])  # a change writes the buffered pulls first, then itself
    await hub.emit([event("pull") for _ in range(250)])
    await hub.close()
    files = sorted((directory / "x").glob("*.json"))
    batches = [[e["action"] for e in json.loads(f.read_bytes())["events"]] for f in files]
    assert batches == [["pull"] * 50, ["push"], ["pull"] * 100, ["pull"] * 100, ["pull"] * 50]
