"""Distribution keys the origin implements (regcore/configdist.py lists them with the ones it
refuses): each proved on a running server, in-process or as the real ``quayside origin serve``.

- ``http.debug``: metrics on the debug listener, none on the main port;
- ``http.headers``: on every answer, without replacing what a handler set;
- ``http.relativeurls``: Location headers relative or absolute as asked;
- ``health.storagedriver``: a storage that fails ``threshold`` checks in a row makes every API
  answer a 503, and the origin serves again once a check passes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from harness.edgeorigin import request
from harness.ports import free_port
from harness.servers import OriginProcess
from origin.storagewatch import WATCH, StorageWatch
from regcore.storage.layout import Layout
from tests.origin.conftest import OriginFactory


def test_debug_listener_serves_metrics_and_the_registry_port_does_not(tmp_path: Path) -> None:
    debug_port = free_port()
    config = {
        "http": {
            "debug": {
                "addr": f"127.0.0.1:{debug_port}",
                "prometheus": {"enabled": True, "path": "/debug/metrics"},
            }
        }
    }
    with OriginProcess(workdir=tmp_path / "origin", config=config) as origin:
        debug = f"http://127.0.0.1:{debug_port}"
        assert request(origin.url + "/v2/").status == 200
        reply = request(debug + "/debug/metrics")
        assert reply.status == 200 and "quayside_origin_http_requests_total" in reply.body.decode()
        assert request(origin.url + "/metrics").status == 404  # not public on the registry port
        assert request(debug + "/metrics").status == 404  # only the configured path
        assert request(debug + "/v2/").status == 404  # the debug listener serves no API
        line = next(json.loads(x) for x in origin.log_text().splitlines() if '"listening"' in x)
        assert line["debug_url"] == debug


async def test_main_port_serves_no_metrics_when_the_debug_listener_does(
    origin_factory: OriginFactory,
) -> None:
    origin = await origin_factory(
        overrides={"http.debug": {"addr": "127.0.0.1:0", "prometheus": {"enabled": True}}}
    )
    assert (await origin.client.get("/metrics")).status == 404
    plain = await origin_factory(root=origin.root.parent / "other")
    assert (await plain.client.get("/metrics")).status == 200


async def test_configured_headers_on_every_answer_handlers_win(
    origin_factory: OriginFactory,
) -> None:
    origin = await origin_factory(
        overrides={
            "http.headers": {
                "X-Content-Type-Options": ["nosniff"],
                "X-Extra": ["one", "two"],
                "Content-Type": "text/evil",
            }
        }
    )
    ok = await origin.client.get("/v2/")
    missing = await origin.client.get("/v2/team/app/manifests/latest")
    for resp in (ok, missing):
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers.getall("X-Extra") == ["one", "two"]
        assert resp.headers["Content-Type"].startswith("application/json")
    assert missing.status == 404


@pytest.mark.parametrize(
    ("settings", "expect"),
    [
        ({}, "/v2/"),
        ({"http.relativeurls": True, "http.host": "https://reg.example"}, "/v2/"),
        ({"http.host": "https://reg.example"}, "https://reg.example/v2/"),
        ({"http.relativeurls": False}, "http://127.0.0.1:{port}/v2/"),
    ],
)
async def test_relativeurls_decides_the_location_form(
    origin_factory: OriginFactory, settings: dict[str, object], expect: str
) -> None:
    origin = await origin_factory(overrides=settings)
    location = await origin.start("team/app")
    assert location.startswith(expect.format(port=origin.client.port)), location


async def test_failing_storage_checks_answer_503_until_one_passes(
    origin_factory: OriginFactory,
) -> None:
    origin = await origin_factory(
        overrides={
            "health.storagedriver": {"enabled": True, "interval": "20ms", "threshold": 2},
        }
    )
    assert (await origin.client.get("/v2/")).status == 200
    moved = origin.root.with_name("moved-away")
    origin.root.rename(moved)
    try:
        resp = await _wait_status(origin, 503)
        assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"
        assert (await origin.client.get("/metrics")).status == 200  # reports, not gated
    finally:
        moved.rename(origin.root)
    await _wait_status(origin, 200)


async def _wait_status(origin: object, status: int) -> object:
    client = origin.client  # type: ignore[attr-defined]
    for _ in range(200):
        resp = await client.get("/v2/")
        if resp.status == status:
            return resp
        await asyncio.sleep(0.02)
    raise AssertionError(f"/v2/ never answered {status}")


async def test_storage_watch_counts_failures_in_a_row(tmp_path: Path) -> None:
    eio = OSError(5, "Input/output error")
    results: list[BaseException | None] = [eio, None, eio, eio]

    def probe() -> None:
        exc = results.pop(0)
        if exc is not None:
            raise exc

    watch = StorageWatch(Layout(tmp_path), interval=1.0, threshold=2, probe=probe)
    assert [await watch.check() for _ in range(2)] == [False, True]
    assert watch.healthy  # one failure, then a pass: the count restarted
    await watch.check()
    assert watch.healthy and watch.failures == 1
    await watch.check()
    assert not watch.healthy and watch.last_error.startswith("EIO")


async def test_storage_watch_is_off_by_default(origin_factory: OriginFactory) -> None:
    origin = await origin_factory()
    assert WATCH not in origin.app
