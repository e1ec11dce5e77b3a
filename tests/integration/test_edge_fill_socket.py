"""The fill's socket byte path in real edge processes (uvloop, as shipped), under faults.

Peers are real: docker-registry upstream behind a paced link (harness.slowproxy, its own
process, so fills last long enough to be interrupted), redis-server for the region lock, edge
processes killed with SIGKILL. Clients are plain aiohttp; every wait is bounded. Shown:

- a client that disconnects mid-blob does not stop the fill: the blob is verified and cached
  from the one upstream GET, and the next client gets it from the cache;
- the owner of a region fill dies mid-blob while another node streams it from the owner's
  peer endpoint (read from the socket by that node's fill thread): the other node takes the
  lock over, resumes from the upstream by Range, and its client gets exactly the blob's bytes.
Both assert, from /metrics, that the bodies were read by the fill's own thread
(``fill_bodies{reader="socket"}``).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path

import aiohttp
import pytest

from harness.bigblobs import push_large_blob as push_blob
from harness.images import MiB
from harness.procs import wait_until
from harness.redis import RedisServer
from harness.registry import DockerRegistry
from harness.servers import EdgeProcess, ServerGroup
from harness.slowproxy import SlowProxy

pytestmark = pytest.mark.slow


@pytest.fixture
async def session() -> aiohttp.ClientSession:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


def _cached(edge: EdgeProcess, digest: str) -> bytes | None:
    hexpart = digest.split(":", 1)[1]
    path = edge.cache_dir / "blobs" / "sha256" / hexpart[:2] / hexpart / "data"
    return path.read_bytes() if path.exists() else None


async def test_client_disconnecting_mid_blob_leaves_the_socket_fill_to_finish(
    docker_registry: DockerRegistry, servers: ServerGroup, session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:  # fmt: skip
    data = random.Random(41).randbytes(8 * MiB)
    digest = await push_blob(session, docker_registry.url, "team/leave", data)
    with SlowProxy(docker_registry.url, rate="8MiB", workdir=tmp_path / "slow") as slow:
        edge = servers.edge({"reg": slow.url}, cache_size="64MiB")
        url = f"{edge.url}/v2/team/leave/blobs/{digest}"
        async with session.get(url) as resp:
            assert resp.status == 200
            first = await resp.content.readexactly(1 * MiB)
        assert first == data[: 1 * MiB]  # the client left: the connection is closed
        assert await asyncio.to_thread(wait_until, lambda: _cached(edge, digest) == data, 15)
        async with session.get(url) as resp:
            assert resp.status == 200 and await resp.read() == data
    docker_registry.wait_quiet()
    assert docker_registry.count("GET", f"/blobs/{digest}") == 1
    assert edge.metric("quayside_edge_fill_bodies", reader="socket") == 1
    assert edge.metric("quayside_edge_fill_bodies", reader="loop") == 0
    assert edge.metric("quayside_edge_fills_failed") == 0


async def test_region_owner_killed_mid_fill_the_peer_reader_takes_over_by_range(
    docker_registry: DockerRegistry, redis_server: RedisServer, servers: ServerGroup,
    session: aiohttp.ClientSession, tmp_path: Path,
) -> None:  # fmt: skip
    size = 10 * MiB
    data = random.Random(43).randbytes(size)
    digest = await push_blob(session, docker_registry.url, "team/owner", data)
    config = {"redis": {"url": redis_server.url, "lock_ttl": 2}}
    with SlowProxy(docker_registry.url, rate="5MiB", workdir=tmp_path / "slow") as slow:
        owner, other = servers.edges(2, {"reg": slow.url}, cache_size="64MiB", config=config)
        path = f"/v2/team/owner/blobs/{digest}"
        owner_resp = await session.get(owner.url + path)  # the owner takes the region lock
        assert owner_resp.status == 200
        await owner_resp.content.readexactly(512 * 1024)
        sha, got = hashlib.sha256(), 0
        async with session.get(other.url + path) as resp:  # streams from the owner's peer
            assert resp.status == 200
            async for chunk in resp.content.iter_any():
                sha.update(chunk)
                got += len(chunk)
                if got >= 2 * MiB and owner.running:
                    owner.kill()
                    owner_resp.close()
        assert got == size and "sha256:" + sha.hexdigest() == digest
        assert await asyncio.to_thread(wait_until, lambda: _cached(other, digest) == data, 10)
    docker_registry.wait_quiet()
    gets = [r for r in docker_registry.access.records() if r.method == "GET" and digest in r.path]
    assert len(gets) == 2  # the owner's, then the taker's resumed one
    assert other.metric("quayside_edge_fills_remote") == 1
    assert other.metric("quayside_edge_lock_takeovers") == 1
    assert other.metric("quayside_edge_fill_bodies", reader="socket") == 2  # peer, then upstream
    assert other.metric("quayside_edge_fill_bodies", reader="loop") == 0
