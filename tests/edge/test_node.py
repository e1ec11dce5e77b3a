"""EdgeNode: built without I/O, started and stopped in order, a failed start undone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.app import EDGE_NODE, create_app
from edge.config import EdgeConfig, load_edge_config
from edge.node import EdgeNode
from harness.registry import DockerRegistry
from regcore import errors


def _config(tmp_path: Path, upstream_url: str, **upstream: Any) -> EdgeConfig:
    return load_edge_config(
        None,
        {},
        {
            "listen": "127.0.0.1:0",
            "cache": {"dir": str(tmp_path / "cache"), "size": 64 * 1024 * 1024},
            "upstreams": [{"name": "local", "url": upstream_url, **upstream}],
        },
    )


async def test_node_serves_only_between_start_and_stop(
    docker_registry: DockerRegistry, aiohttp_client: Any, tmp_path: Path
) -> None:
    app = create_app(_config(tmp_path, docker_registry.url))
    node = app[EDGE_NODE]
    assert not node.serving and node.health()["status"] == "unavailable"
    with pytest.raises(errors.Unavailable):
        node.upstreams.client("local")  # nothing opened at construction

    client = await aiohttp_client(app)
    assert node.serving
    resp = await client.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    checks = body.pop("checks")  # edge.health's probes (storage, disk; no Redis configured)
    assert body == {"status": "ok", "upstreams": ["local"], "redis": False, "cache_bytes": 0}
    assert checks["storage"]["ok"] is True and "redis" not in checks
    assert (await client.get("/v2/team/app/tags/list")).status == 404  # upstream reached

    await client.close()  # the app's cleanup: the node stops
    assert not node.serving and node.health()["cache_bytes"] is None
    with pytest.raises(errors.Unavailable):
        node.upstreams.client("local")
    await node.stop()  # idempotent


async def test_failed_start_closes_what_it_had_opened_and_can_be_retried(
    docker_registry: DockerRegistry, tmp_path: Path
) -> None:
    config = _config(tmp_path, docker_registry.url)
    blocker = tmp_path / "cache" / "manifests"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the manifest store's directory goes")
    node = EdgeNode(config)
    with pytest.raises(Exception):  # noqa: B017 -- whatever diskcache raises for a file
        await node.start()
    assert not node.serving
    with pytest.raises(errors.Unavailable):  # the upstream session opened first is closed
        node.upstreams.client("local")

    blocker.unlink()
    await node.start()  # everything was closed, so everything opens again
    try:
        assert node.serving
        with pytest.raises(errors.NameUnknown):  # the upstream answered through the session
            await node.upstreams.client("local").list_tags("team/none")
    finally:
        await node.stop()


async def test_upstream_credentials_gone_by_start_stop_the_start(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret")
    config = _config(tmp_path, "http://127.0.0.1:9", username="bot", password_file=str(secret))
    secret.unlink()  # credentials are read when the node starts, not when it is built
    node = EdgeNode(config)
    with pytest.raises(OSError):
        await node.start()
    assert not node.serving


@pytest.mark.parametrize(
    ("value", "env"), [(True, {}), (False, {"QUAYSIDE_EDGE_CACHE_DIRECT_IO": "false"})]
)
def test_cache_direct_io_reaches_the_fills(
    tmp_path: Path, value: bool, env: dict[str, str]
) -> None:
    """``cache.direct_io`` (default on) is what the node's fills write with (see
    tests/edge/test_fill_live.py for what it changes)."""
    cfg = load_edge_config(
        None,
        env,
        {
            "listen": "127.0.0.1:0",
            "cache.dir": str(tmp_path / "c"),
            "upstreams": ["http://127.0.0.1:1"],
        },
    )
    assert cfg.cache.direct_io is value
    assert EdgeNode(cfg).fills.direct_io is value
