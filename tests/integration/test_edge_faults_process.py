"""Process-level faults around real edge processes, each test named after its scenario.

Peers are real: docker-registry upstream (killed with SIGKILL or frozen with SIGSTOP),
redis-server (SIGKILL), the edge itself (SIGKILL mid-fill, restarted on the same cache dir),
and a paced link (harness.slowproxy, its own process) where a fill must last long enough to
be interrupted. Clients are plain aiohttp; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from harness.bigblobs import push_large_blob as push_blob
from harness.bigblobs import push_large_image as push_image
from harness.fixtures import ImageFactory
from harness.images import Image, KiB, MiB, sha256_digest
from harness.procs import wait_until
from harness.redis import RedisServer
from harness.registry import DockerRegistry
from harness.servers import EdgeProcess, ServerGroup, disk_bytes, tree_bytes
from harness.slowproxy import SlowProxy
from regcore.mediatypes import DEFAULT_ACCEPT

pytestmark = pytest.mark.slow

MANIFEST_ACCEPT = ", ".join(DEFAULT_ACCEPT)


@pytest.fixture
async def session() -> aiohttp.ClientSession:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]
    seconds: float

    def json(self) -> dict[str, object]:
        return json.loads(self.body)


async def _get(
    session: aiohttp.ClientSession, url: str, *, method: str = "GET", accept: str | None = None
) -> Answer:
    headers = {"Accept": accept} if accept else {}
    t0 = time.monotonic()
    async with session.request(method, url, headers=headers) as resp:
        body = await resp.read()
        return Answer(resp.status, body, dict(resp.headers), time.monotonic() - t0)


async def _pull_image(
    session: aiohttp.ClientSession, base: str, repo: str, tag: str, image: Image
) -> float:
    """Manifest by tag, then every blob; assert exact bytes; return the seconds it took."""
    t0 = time.monotonic()
    manifest = await _get(session, f"{base}/v2/{repo}/manifests/{tag}", accept=MANIFEST_ACCEPT)
    assert manifest.status == 200, manifest.body
    assert manifest.body == image.manifest
    assert manifest.headers.get("Docker-Content-Digest") == image.digest
    for digest, data in image.blobs().items():
        blob = await _get(session, f"{base}/v2/{repo}/blobs/{digest}")
        assert blob.status == 200, blob.body[:300]
        assert blob.body == data, digest
    return time.monotonic() - t0


def _blob_files(edge: EdgeProcess) -> dict[str, Path]:
    """``digest -> file`` under the cache's ``blobs/`` tree (``blobs/sha256/xx/HEX/data``)."""
    out: dict[str, Path] = {}
    root = edge.cache_dir / "blobs"
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            rel = path.relative_to(root).parts
            out[f"{rel[0]}:{rel[-2]}" if len(rel) >= 3 else str(rel)] = path
    return out


def _assert_blob_tree_verified(edge: EdgeProcess) -> None:
    for digest, path in _blob_files(edge).items():
        assert path.name == "data", path
        assert sha256_digest(path.read_bytes()) == digest, f"{path} does not hold {digest}"


# --------------------------------------------------------------------------- redis killed


async def test_redis_killed_mid_run_serving_continues(
    docker_registry: DockerRegistry,
    redis_server: RedisServer,
    servers: ServerGroup,
    image_factory: ImageFactory,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    warm = image_factory.image(layer_sizes=(512 * KiB,))
    cold = image_factory.image(layer_sizes=(1 * MiB, 256 * KiB))
    inflight = random.Random(7).randbytes(6 * MiB)
    await push_image(session, docker_registry.url, "team/warm", "1.0", warm)
    await push_image(session, docker_registry.url, "team/cold", "1.0", cold)
    inflight_digest = await push_blob(session, docker_registry.url, "team/cold", inflight)

    with SlowProxy(docker_registry.url, rate="6MiB", workdir=tmp_path / "slow") as slow:
        edges = servers.edges(2, {"reg": slow.url}, redis_url=redis_server.url, tag_ttl=30)
        await _pull_image(session, edges[0].url, "team/warm", "1.0", warm)

        # Two edges share a region fill of a blob that takes ~1 s; redis dies in the middle.
        fetches = [
            asyncio.create_task(_get(session, f"{e.url}/v2/team/cold/blobs/{inflight_digest}"))
            for e in edges
        ]
        await asyncio.sleep(0.3)
        redis_server.kill()
        assert not redis_server.ping()
        for answer in await asyncio.gather(*fetches):
            assert answer.status == 200
            assert sha256_digest(answer.body) == inflight_digest

        # Afterwards: cold and warm pulls on both edges still work, and promptly.
        for edge in edges:
            assert await _pull_image(session, edge.url, "team/cold", "1.0", cold) < 10
            assert await _pull_image(session, edge.url, "team/warm", "1.0", warm) < 10
    assert all(e.running for e in edges)
    assert sum(e.metric("quayside_edge_redis_fallbacks") for e in edges) >= 1


async def test_redis_hung_serving_continues_with_bounded_delay(
    docker_registry: DockerRegistry,
    redis_server: RedisServer,
    servers: ServerGroup,
    image_factory: ImageFactory,
    session: aiohttp.ClientSession,
) -> None:
    """redis-server frozen (SIGSTOP: connections accepted, commands never answered): the lock
    and the shared tag cache time out and the node serves on its own."""
    image = image_factory.image(layer_sizes=(512 * KiB,))
    cold = image_factory.image(layer_sizes=(1 * MiB,))
    await push_image(session, docker_registry.url, "team/warm", "1.0", image)
    await push_image(session, docker_registry.url, "team/cold", "1.0", cold)
    edge = servers.edge({"reg": docker_registry.url}, redis_url=redis_server.url, tag_ttl=1)
    await _pull_image(session, edge.url, "team/warm", "1.0", image)
    await asyncio.sleep(1.1)  # the warm tag is due for revalidation (shared cache in redis)
    redis_server.pause()
    try:
        assert await _pull_image(session, edge.url, "team/cold", "1.0", cold) < 5
        assert await _pull_image(session, edge.url, "team/warm", "1.0", image) < 5
    finally:
        redis_server.resume()
    assert edge.running


# --------------------------------------------------------------------------- edge killed


async def test_edge_killed_mid_fill_restarted_serves_no_partial_file(
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    size = 6 * MiB
    data = random.Random(11).randbytes(size)
    digest = await push_blob(session, docker_registry.url, "team/crash", data)
    with SlowProxy(docker_registry.url, rate="6MiB", workdir=tmp_path / "slow") as slow:
        edge = servers.edge({"reg": slow.url}, cache_size="64MiB")
        url = f"{edge.url}/v2/team/crash/blobs/{digest}"

        received = 0
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)):
            async with session.get(url) as resp:
                assert resp.status == 200
                async for chunk in resp.content.iter_any():
                    received += len(chunk)
                    if received >= 1 * MiB and edge.running:
                        edge.kill()
        assert 0 < received < size
        assert docker_registry.access.wait_count("GET", f"/blobs/{digest}", 1) == 1
        # The interrupted fill left nothing under blobs/ (at most a temp file elsewhere).
        assert digest not in _blob_files(edge)
        _assert_blob_tree_verified(edge)

        edge.start()  # same cache dir, same port
        head = await _get(session, url, method="HEAD")
        assert head.status == 200
        assert head.headers.get("Docker-Content-Digest") == digest
        answer = await _get(session, url)
        assert answer.status == 200
        assert len(answer.body) == size
        assert sha256_digest(answer.body) == digest
    docker_registry.wait_quiet()
    assert docker_registry.count("GET", f"/blobs/{digest}") == 2  # fetched again after restart
    assert wait_until(lambda: digest in _blob_files(edge), timeout=5)
    _assert_blob_tree_verified(edge)
    incomplete = edge.cache_dir / "_incomplete"
    assert wait_until(lambda: tree_bytes(incomplete) == 0, timeout=5), list(incomplete.iterdir())


# --------------------------------------------------------------------------- upstream down / hung


async def _warm_then_break_upstream(
    session: aiohttp.ClientSession,
    registry: DockerRegistry,
    servers: ServerGroup,
    image_factory: ImageFactory,
    *,
    config: dict[str, object],
) -> tuple[EdgeProcess, Image, str]:
    """Edge with tag TTL 1 s in front of ``registry``; image pulled once; one more blob pushed
    but never pulled. Returns (edge, image, uncached digest)."""
    image = image_factory.image(layer_sizes=(2 * MiB, 64 * KiB))
    await push_image(session, registry.url, "team/outage", "1.0", image)
    uncached = await push_blob(session, registry.url, "team/outage", os.urandom(256 * KiB))
    edge = servers.edge([], config=config, tag_ttl=1)
    await _pull_image(session, edge.url, "team/outage", "1.0", image)
    await asyncio.sleep(1.2)  # the tag is now due for revalidation
    return edge, image, uncached


async def _assert_served_through_outage(
    session: aiohttp.ClientSession,
    edge: EdgeProcess,
    image: Image,
    uncached: str,
    *,
    tag_bound: float,
    uncached_bound: float,
) -> None:
    base = f"{edge.url}/v2/team/outage"
    t0 = time.monotonic()
    for digest, data in image.blobs().items():
        blob = await _get(session, f"{base}/blobs/{digest}")
        assert (blob.status, blob.body == data) == (200, True), blob.body[:300]
        head = await _get(session, f"{base}/blobs/{digest}", method="HEAD")
        assert head.status == 200
    by_digest = await _get(session, f"{base}/manifests/{image.digest}", accept=MANIFEST_ACCEPT)
    assert (by_digest.status, by_digest.body) == (200, image.manifest)
    cached_seconds = time.monotonic() - t0
    assert cached_seconds < 1.5, f"cached content took {cached_seconds:.2f}s"

    tag = await _get(session, f"{base}/manifests/1.0", accept=MANIFEST_ACCEPT)
    assert tag.status == 200, tag.body
    assert tag.body == image.manifest
    assert tag.headers.get("Docker-Content-Digest") == image.digest
    assert tag.seconds < tag_bound, f"last known tag took {tag.seconds:.2f}s"
    assert edge.metric("quayside_edge_stale_serves") >= 1

    missing = await _get(session, f"{base}/blobs/{uncached}")
    print(
        f"outage: cached {cached_seconds:.3f}s, tag {tag.seconds:.3f}s, "
        f"uncached {missing.status} in {missing.seconds:.3f}s: {missing.body[:200]!r}"
    )
    assert missing.seconds < uncached_bound, f"uncached blob took {missing.seconds:.2f}s"
    assert missing.status >= 500, (missing.status, missing.body)
    errors = missing.json()["errors"]
    assert isinstance(errors, list) and errors and isinstance(errors[0]["code"], str), errors


def _upstream_config(url: str, **extra: object) -> dict[str, object]:
    return {"upstreams": {"reg": {"url": url, **extra}}}


async def test_upstream_down_cached_blob_and_last_known_tag_served_quickly(
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    image_factory: ImageFactory,
    session: aiohttp.ClientSession,
) -> None:
    edge, image, uncached = await _warm_then_break_upstream(
        session, docker_registry, servers, image_factory,
        config=_upstream_config(docker_registry.url),
    )  # fmt: skip
    docker_registry.kill()
    await _assert_served_through_outage(
        session, edge, image, uncached, tag_bound=2.0, uncached_bound=3.0
    )


async def test_upstream_hung_cached_blob_and_last_known_tag_served_within_revalidation_timeout(
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    image_factory: ImageFactory,
    session: aiohttp.ClientSession,
) -> None:
    config = _upstream_config(docker_registry.url, timeouts={"connect": 1, "read": 1.5}, retries=1)
    config["tags"] = {"revalidate_timeout": 1}
    edge, image, uncached = await _warm_then_break_upstream(
        session, docker_registry, servers, image_factory, config=config
    )
    docker_registry.pause()
    try:
        # tag: revalidation gives up after 1 s; uncached: (connect+read) x 2 tries at most.
        await _assert_served_through_outage(
            session, edge, image, uncached, tag_bound=2.0, uncached_bound=7.0
        )
    finally:
        docker_registry.resume()


# --------------------------------------------------------------------------- cache bound


class _Sampler:
    """Calls ``probe()`` every few ms in a thread while the body runs; keeps the maximum."""

    def __init__(self, probe: Callable[[], float], interval: float = 0.005) -> None:
        self.probe = probe
        self.interval = interval
        self.peak = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.probe())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


async def test_cache_bound_three_times_cache_size(
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    session: aiohttp.ClientSession,
) -> None:
    bound = 40 * MiB
    blob_size = 8 * MiB
    count = 15  # 120 MiB of distinct blobs: three times the bound
    blobs = [random.Random(1000 + i).randbytes(blob_size) for i in range(count)]
    digests = [await push_blob(session, docker_registry.url, "team/lru", b) for b in blobs]
    edge = servers.edge({"reg": docker_registry.url}, cache_size=str(bound))
    base = f"{edge.url}/v2/team/lru/blobs"
    hot = 0

    blobs_dir, incomplete_dir = edge.cache_dir / "blobs", edge.cache_dir / "_incomplete"

    def accounted() -> float:
        samples = edge.metrics()
        return edge.metric("quayside_edge_cache_bytes", samples) + edge.metric(
            "quayside_edge_cache_reserved_bytes", samples
        )

    with (
        _Sampler(lambda: tree_bytes(blobs_dir)) as blob_tree,
        _Sampler(lambda: disk_bytes(blobs_dir, incomplete_dir)) as on_disk,
        _Sampler(accounted, interval=0.02) as books,
    ):
        for i in range(count):
            answer = await _get(session, f"{base}/{digests[i]}")
            assert (answer.status, sha256_digest(answer.body)) == (200, digests[i])
            # keep blob 0 recently used: a hit refreshes its recency
            answer = await _get(session, f"{base}/{digests[hot]}")
            assert (answer.status, sha256_digest(answer.body)) == (200, digests[hot])
        # two concurrent fills while the cache is full: the bound holds during fills too
        answers = await asyncio.gather(*(_get(session, f"{base}/{digests[i]}") for i in (1, 2)))
        assert [sha256_digest(a.body) for a in answers] == [digests[1], digests[2]]

    print(
        f"cache bound {bound / MiB:.0f} MiB: blobs/ peak {blob_tree.peak / MiB:.2f} MiB, "
        f"blobs/+_incomplete/ peak {on_disk.peak / MiB:.2f} MiB, "
        f"accounted peak {books.peak / MiB:.2f} MiB ({blob_tree.samples} samples)"
    )
    assert blob_tree.samples > 10 and books.samples > 5
    assert blob_tree.peak <= bound, f"blobs/ peaked at {blob_tree.peak / MiB:.2f} MiB"
    assert books.peak <= bound, f"cache bytes + reserved peaked at {books.peak / MiB:.2f} MiB"
    # Fills in progress are reserved (above); on disk an evicted file may sit in _incomplete/
    # until its unlink runs, and the walk is not atomic (a victim counted just before its
    # unlink, a fill's first chunk just after): allow less than one blob. A fill that did not
    # reserve its size first would overshoot by a whole blob.
    assert on_disk.peak < bound + blob_size, f"on disk: {on_disk.peak / MiB:.2f} MiB"

    docker_registry.wait_quiet()
    # The hot blob was fetched upstream once and survived; old ones went and came back.
    assert docker_registry.count("GET", f"/blobs/{digests[hot]}") == 1
    cached = _blob_files(edge)
    assert digests[hot] in cached
    assert digests[1] in cached and digests[2] in cached  # just fetched again
    for i in (3, 4, 5):
        assert digests[i] not in cached, f"blob {i} (least recently used) was not evicted"
    assert docker_registry.count("GET", f"/blobs/{digests[1]}") == 2
    assert edge.metric("quayside_edge_cache_evictions") >= count - bound // blob_size
    _assert_blob_tree_verified(edge)
