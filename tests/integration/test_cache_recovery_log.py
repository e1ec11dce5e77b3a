"""A restart after a crash says what it cleaned up: one info line with files and bytes.

A real edge fills a blob through a paced link (harness.slowproxy) from a real docker-registry
and is SIGKILLed mid-fill; what the fill had written stays in the cache's ``_incomplete/``.
The restarted edge removes it and logs exactly one info line whose ``count`` and ``bytes``
equal what was on disk. A clean restart logs no such line.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import aiohttp
import pytest

from harness.bigblobs import push_large_blob
from harness.images import MiB
from harness.registry import DockerRegistry
from harness.servers import EdgeProcess, ServerGroup
from harness.slowproxy import SlowProxy

pytestmark = pytest.mark.slow

LINE = "removed fills left by a crash"


def _cleanup_lines(edge: EdgeProcess) -> list[dict[str, object]]:
    out = []
    for line in edge.log_text().splitlines():
        if line.startswith("{") and LINE in line:
            out.append(json.loads(line))
    return out


def _leftovers(edge: EdgeProcess) -> list[Path]:
    incomplete = edge.cache_dir / "_incomplete"
    return [p for p in incomplete.iterdir() if p.is_file() and not p.name.startswith(".")]


def _bytes_on_disk(edge: EdgeProcess) -> int:
    return sum(p.stat().st_size for p in _leftovers(edge))


async def test_restart_after_kill_mid_fill_logs_the_files_and_bytes_removed(
    docker_registry: DockerRegistry, servers: ServerGroup, tmp_path: Path
) -> None:
    size = 6 * MiB
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        data = random.Random(7).randbytes(size)
        digest = await push_large_blob(session, docker_registry.url, "team/crash", data)
        with SlowProxy(docker_registry.url, rate="6MiB", workdir=tmp_path / "slow") as slow:
            edge = servers.edge({"reg": slow.url}, cache_size="64MiB")
            received = 0
            with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)):
                async with session.get(f"{edge.url}/v2/team/crash/blobs/{digest}") as resp:
                    assert resp.status == 200
                    async for chunk in resp.content.iter_any():
                        received += len(chunk)
                        # Killed once the fill has bytes in its file: a client is served the
                        # newest piece from memory before that piece is written (live bytes).
                        if received >= 1 * MiB and edge.running and _bytes_on_disk(edge):
                            edge.kill()
            assert 0 < received < size
            left = _leftovers(edge)
            assert left, "the killed fill left no temp file (nothing to test)"
            left_bytes = sum(p.stat().st_size for p in left)
            assert left_bytes > 0

            edge.start()
            lines = _cleanup_lines(edge)
            assert len(lines) == 1, edge.log_text()
            assert lines[0]["level"] == "info"
            assert (lines[0]["count"], lines[0]["bytes"]) == (len(left), left_bytes)
            assert _leftovers(edge) == []

            edge.restart()  # nothing left behind this time: no line
            assert _cleanup_lines(edge) == []
