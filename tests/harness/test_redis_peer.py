"""harness.redis: a real redis-server reachable with redis.asyncio; kill and pause work."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from harness.procs import ProcessError
from harness.redis import RedisServer


async def test_ping_set_get(redis_server: RedisServer) -> None:
    assert redis_server.url.startswith("redis://127.0.0.1:") and redis_server.url.endswith("/0")
    client = aioredis.from_url(redis_server.url)
    try:
        assert await client.ping() is True
        await client.set("k", b"v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()


async def test_killed_redis_refuses_and_paused_redis_hangs(redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url, socket_timeout=0.3, socket_connect_timeout=0.3)
    try:
        assert await client.ping()
        redis_server.pause()
        with pytest.raises((RedisTimeoutError, asyncio.TimeoutError)):
            await client.ping()
        redis_server.resume()
        await client.connection_pool.disconnect()
        assert await client.ping()
        redis_server.kill()
        await client.connection_pool.disconnect()
        with pytest.raises(RedisConnectionError):
            await client.ping()
        redis_server.start()
        assert await client.ping()
    finally:
        await client.aclose()


def test_a_server_that_lost_its_port_never_passes_for_ready(
    redis_server: RedisServer, tmp_path
) -> None:
    """Two test processes can pick the same free port: the one whose redis-server could not
    bind must fail to start, not take the other's server (which answers PING) for its own."""
    loser = RedisServer(workdir=tmp_path / "loser", port=redis_server.port, start_timeout=5.0)
    with pytest.raises(ProcessError, match="did not answer PING"):
        loser.start()
    assert not loser.running
    assert redis_server.ready()  # the winner is still ours and up
