"""A thundering herd on one region: 50 clients, 3 edge processes, one redis-server, one blob.

The upstream (docker-registry) holds a 24 MiB blob no edge has. A paced link (harness.slowproxy,
~12 MiB/s) sits between the edges and the registry so the fill takes ~2 s: long enough to see
whether clients get bytes while it runs. 50 aiohttp clients, spread round-robin over the three
edges, GET the blob at the same moment. Shown:

- the registry's access log holds exactly ONE GET of the blob (one fill for the region);
- every client receives exactly the blob's bytes (sha256 and length match);
- every client's first byte arrived before the earliest client finished, i.e. while the fill
  was still running (nobody waited for the whole object first).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from harness.bigblobs import push_large_blob as push_blob
from harness.images import MiB
from harness.redis import RedisServer
from harness.registry import DockerRegistry
from harness.servers import EdgeProcess, ServerGroup
from harness.slowproxy import SlowProxy

pytestmark = pytest.mark.slow

BLOB_SIZE = 24 * MiB
CLIENTS = 50
EDGES = 3
RATE = "12MiB"
REPO = "team/herd"


@dataclass
class Outcome:
    edge: int
    status: int
    digest: str
    length: int
    ttfb: float  # seconds from the common start to the first body byte
    done: float  # seconds from the common start to the last body byte


async def _client(
    session: aiohttp.ClientSession, edge_index: int, url: str, start: float
) -> Outcome:
    sha = hashlib.sha256()
    length = 0
    ttfb = -1.0
    async with session.get(url) as resp:
        async for chunk in resp.content.iter_any():
            if ttfb < 0:
                ttfb = time.monotonic() - start
            sha.update(chunk)
            length += len(chunk)
        return Outcome(
            edge_index, resp.status, "sha256:" + sha.hexdigest(), length, ttfb,
            time.monotonic() - start,
        )  # fmt: skip


async def test_fifty_clients_three_edges_one_upstream_get_bytes_while_filling(
    docker_registry: DockerRegistry,
    redis_server: RedisServer,
    servers: ServerGroup,
    tmp_path: Path,
) -> None:
    blob = random.Random(20240611).randbytes(BLOB_SIZE)
    async with aiohttp.ClientSession() as session:
        digest = await push_blob(session, docker_registry.url, REPO, blob)
    with SlowProxy(docker_registry.url, rate=RATE, workdir=tmp_path / "slow") as slow:
        edges: list[EdgeProcess] = servers.edges(
            EDGES, {"reg": slow.url}, cache_size="256MiB", redis_url=redis_server.url
        )
        docker_registry.mark_log()
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            start = time.monotonic()
            outcomes = await asyncio.gather(*(
                _client(session, i % EDGES, f"{edges[i % EDGES].url}/v2/{REPO}/blobs/{digest}",
                        start)
                for i in range(CLIENTS)
            ))  # fmt: skip
        upstream = docker_registry.wait_quiet()
        peak_rss = [e.peak_rss_bytes() for e in edges]

    blob_gets = [r for r in upstream if r.method == "GET" and digest in r.path]
    assert len(blob_gets) == 1, [f"{r.method} {r.target} {r.status} {r.agent}" for r in upstream]
    assert blob_gets[0].bytes == BLOB_SIZE

    bad = [o for o in outcomes if (o.status, o.digest, o.length) != (200, digest, BLOB_SIZE)]
    assert bad == [], bad
    assert {o.edge for o in outcomes} == set(range(EDGES))

    first_done = min(o.done for o in outcomes)
    last_first_byte = max(o.ttfb for o in outcomes)
    print(
        f"herd: first byte {min(o.ttfb for o in outcomes):.3f}-{last_first_byte:.3f}s, "
        f"done {first_done:.3f}-{max(o.done for o in outcomes):.3f}s, "
        f"edge peak RSS {[f'{r / MiB:.0f} MiB' for r in peak_rss]}"
    )
    # The paced link makes the fill last ~2 s, so "before the fill ended" is measurable.
    assert first_done > 1.0, f"fill finished in {first_done:.2f}s: link not paced?"
    assert last_first_byte < first_done, (
        f"a client waited {last_first_byte:.2f}s for its first byte; "
        f"the first client was done at {first_done:.2f}s"
    )
    fills_from_upstream = sum(
        e.metric("quayside_edge_fills_started") - e.metric("quayside_edge_fills_remote")
        for e in edges
    )
    assert fills_from_upstream == 1
