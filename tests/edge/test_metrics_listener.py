"""Where the edge serves its metrics: ``/metrics`` on ``listen`` by default, nowhere with
``metrics.enabled: false`` (the key used to be ignored), and only on a listener of their own
with ``metrics.listen`` (checked on the real ``quayside edge serve``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.app import create_app
from edge.config import load_edge_config
from harness.edgeorigin import request
from harness.ports import free_port
from harness.servers import EdgeProcess


async def test_metrics_enabled_false_serves_no_metrics(aiohttp_client: Any, tmp_path: Path) -> None:
    served = {}
    for enabled in (True, False):
        config = load_edge_config(
            None,
            {},
            {
                "upstreams": ["http://127.0.0.1:9"],
                "cache.dir": str(tmp_path / f"cache-{enabled}"),
                "metrics.enabled": enabled,
            },
        )
        client = await aiohttp_client(create_app(config))
        served[enabled] = (await client.get("/metrics")).status
    assert served == {True: 200, False: 404}


def test_metrics_listen_serves_metrics_there_and_not_on_the_edge_port(tmp_path: Path) -> None:
    port = free_port()
    config = {"metrics": {"listen": f"127.0.0.1:{port}", "path": "/internal/metrics"}}
    edge = EdgeProcess({"origin": "http://127.0.0.1:9"}, workdir=tmp_path / "edge", config=config)
    with edge:
        metrics = f"http://127.0.0.1:{port}"
        reply = request(metrics + "/internal/metrics")
        assert reply.status == 200 and "quayside_edge_" in reply.body.decode()
        assert request(edge.url + "/metrics").status == 404
        assert request(edge.url + "/healthz").status in (200, 503)  # the edge port still serves
        assert request(metrics + "/v2/").status == 404
        line = next(json.loads(x) for x in edge.log_text().splitlines() if '"listening"' in x)
        assert line["debug_url"] == metrics
