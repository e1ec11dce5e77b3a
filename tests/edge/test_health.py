"""The edge's /healthz and /readyz (edge.health) against real Redis and a real upstream.

Each scenario breaks one real dependency -- redis-server killed or frozen (SIGSTOP),
docker-registry stopped -- and checks that the answer says so, stays bounded in time, and keeps
the node live where it can still serve. The routes are mounted on a bare application (the
edge's own app wires them the same way with ``EdgeHealth(...).add_routes(app)``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from edge.health import UPSTREAM_TTL, EdgeHealth
from harness.ports import free_port
from harness.redis import RedisServer
from harness.registry import DockerRegistry
from regcore.health import RESULT_TTL, CachedCheck, Check

try:  # the edge's config is moving from regcore to the edge package
    from edge.config import load_edge_config
except ImportError:
    from edge.config import load_edge_config


def _config(tmp_path: Path, upstreams: list[str], redis_url: str | None = None) -> Any:
    overrides: dict[str, Any] = {"cache.dir": str(tmp_path / "cache"), "upstreams": upstreams}
    if redis_url is not None:
        overrides["redis.url"] = redis_url
    return load_edge_config(None, {}, overrides)


async def _client(aiohttp_client: Any, health: EdgeHealth) -> Any:
    app = web.Application()
    health.add_routes(app)
    return await aiohttp_client(app)


async def _get(client: Any, path: str) -> tuple[int, dict[str, Any]]:
    resp = await client.get(path)
    return resp.status, await resp.json()


async def test_healthy_node_is_live_and_ready_with_redis_answering(
    aiohttp_client, tmp_path, redis_server: RedisServer, docker_registry: DockerRegistry
):
    cfg = _config(tmp_path, [f"hub={docker_registry.url}"], redis_server.url)
    client = await _client(aiohttp_client, EdgeHealth(cfg, serving=lambda: True))
    status, body = await _get(client, "/healthz")
    assert status == 200, body
    assert body["status"] == "ok" and body["redis"] is True, body
    assert body["checks"]["storage"] == {"ok": True, "detail": "writable"}
    assert body["checks"]["disk"]["free_bytes"] > 0
    status, body = await _get(client, "/readyz")
    assert status == 200, body
    assert body["checks"]["upstream:hub"]["ok"] is True
    # the probe leaves nothing behind
    assert list((tmp_path / "cache" / "_incomplete").iterdir()) == []


async def test_redis_down_reports_false_and_degraded_but_stays_live(
    aiohttp_client, tmp_path, redis_server: RedisServer, docker_registry: DockerRegistry
):
    cfg = _config(tmp_path, [f"hub={docker_registry.url}"], redis_server.url)
    client = await _client(aiohttp_client, EdgeHealth(cfg, serving=lambda: True))
    assert (await _get(client, "/healthz"))[1]["redis"] is True
    redis_server.kill()
    await asyncio.sleep(RESULT_TTL)
    status, body = await _get(client, "/healthz")
    assert status == 200, body  # node-local fills keep serving: no restart wanted
    assert body["status"] == "degraded"
    assert body["redis"] is False
    assert body["checks"]["redis"]["ok"] is False
    assert "redis" in body["reason"]
    redis_server.start()
    await asyncio.sleep(RESULT_TTL)
    status, body = await _get(client, "/healthz")
    assert (status, body["redis"], body["status"]) == (200, True, "ok")


async def test_frozen_redis_answer_is_bounded(
    aiohttp_client, tmp_path, redis_server: RedisServer, docker_registry: DockerRegistry
):
    cfg = _config(tmp_path, [f"hub={docker_registry.url}"], redis_server.url)
    client = await _client(aiohttp_client, EdgeHealth(cfg, serving=lambda: True))
    redis_server.pause()
    try:
        started = time.monotonic()
        status, body = await _get(client, "/healthz")
        elapsed = time.monotonic() - started
    finally:
        redis_server.resume()
    assert status == 200 and body["redis"] is False, body
    assert elapsed < 2.5, elapsed


async def test_all_upstreams_down_is_live_but_not_ready_with_the_reason(
    aiohttp_client, tmp_path, docker_registry: DockerRegistry
):
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = _config(tmp_path, [f"hub={docker_registry.url}", f"gone={dead}"])
    client = await _client(aiohttp_client, EdgeHealth(cfg, serving=lambda: True))
    status, body = await _get(client, "/readyz")
    assert status == 200, body  # one upstream answers: ready, but degraded
    assert body["status"] == "degraded"
    assert body["checks"]["upstream:gone"]["ok"] is False
    assert "ECONNREFUSED" in body["checks"]["upstream:gone"]["detail"]
    docker_registry.stop()
    await asyncio.sleep(UPSTREAM_TTL)
    status, body = await _get(client, "/readyz")
    assert status == 503, body
    assert body["status"] == "unhealthy"
    assert "upstreams: 0 of 2 upstreams answer" in body["reason"]
    assert "upstream:hub" in body["reason"]
    status, body = await _get(client, "/healthz")
    assert status == 200 and body["status"] == "ok", body  # it still serves its cache


async def test_not_serving_is_503_unavailable(aiohttp_client, tmp_path, docker_registry):
    cfg = _config(tmp_path, [f"hub={docker_registry.url}"])
    client = await _client(aiohttp_client, EdgeHealth(cfg, serving=lambda: False))
    for path in ("/healthz", "/readyz"):
        status, body = await _get(client, path)
        assert (status, body["status"], body["reason"]) == (
            503,
            "unavailable",
            "starting or stopping",
        )


async def test_unwritable_cache_dir_is_unhealthy(aiohttp_client, tmp_path, docker_registry):
    cfg = _config(tmp_path, [f"hub={docker_registry.url}"])
    (tmp_path / "cache").write_bytes(b"a file where the cache directory should be")
    client = await _client(aiohttp_client, EdgeHealth(cfg, serving=lambda: True))
    status, body = await _get(client, "/healthz")
    assert status == 503, body
    assert body["status"] == "unhealthy"
    assert body["checks"]["storage"]["ok"] is False
    assert "storage:" in body["reason"]


async def test_cached_check_runs_once_per_ttl_and_shares_the_run_in_flight():
    now = [0.0]
    runs = []

    async def check() -> Check:
        runs.append(now[0])
        await asyncio.sleep(0.01)
        return Check(True, "fine")

    cached = CachedCheck(check, ttl=2.0, clock=lambda: now[0])
    results = await asyncio.gather(*(cached.get() for _ in range(10)))
    assert len(runs) == 1 and all(r.ok for r in results)
    now[0] = 1.9
    await cached.get()
    assert len(runs) == 1
    now[0] = 2.1
    await cached.get()
    assert len(runs) == 2


async def test_cached_check_turns_a_hang_and_an_exception_into_a_failed_result():
    async def hang() -> Check:
        await asyncio.sleep(60)
        return Check(True, "never")

    async def boom() -> Check:
        raise PermissionError(13, "Permission denied")

    hung = await CachedCheck(hang, timeout=0.1).get()
    assert (hung.ok, hung.detail) == (False, "timed out")
    failed = await CachedCheck(boom).get()
    assert (failed.ok, failed.detail) == (False, "EACCES: Permission denied")
