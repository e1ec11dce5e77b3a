"""Which requests become events, against the real origin application and a real receiver
(``aiohttp_server``): references with ``includereferences``, mounts, HEAD and refused requests
make none, and an origin without notifications has no events middleware at all."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from origin.notifications import events_middleware
from tests.origin.authfixtures import image, push_image, sha256


async def receiver(aiohttp_server: Any) -> tuple[Any, list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        got.extend((await request.json())["events"])
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/hook", handle)
    return await aiohttp_server(app), got


async def wait_for(got: list[dict[str, Any]], n: int) -> None:
    for _ in range(250):
        if len(got) >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(got)} of {n} events")


async def test_events_for_mount_references_and_nothing_for_head_or_refusals(
    origin_factory: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    server, got = await receiver(aiohttp_server)
    endpoint = {"name": "hook", "url": str(server.make_url("/hook")), "backoff": "100ms"}
    origin = await origin_factory(
        overrides={
            "notifications": {"endpoints": [endpoint], "events": {"includereferences": True}}
        }
    )
    assert events_middleware in origin.app.middlewares
    client = origin.client
    status, digest = await push_image(client, "team/app", "1.0", {}, seed="ev")
    assert status == 201
    config, layer, _ = image("ev")
    await wait_for(got, 3)
    pushed = got[-1]
    assert pushed["action"] == "push" and pushed["target"]["tag"] == "1.0"
    assert [r["digest"] for r in pushed["target"]["references"]] == [sha256(config), sha256(layer)]

    resp = await client.post(
        "/v2/team/other/blobs/uploads/", params={"mount": sha256(layer), "from": "team/app"}
    )
    assert resp.status == 201
    await wait_for(got, 4)
    mount = got[-1]
    assert mount["action"] == "mount"
    assert mount["target"]["fromRepository"] == "team/app"
    assert mount["target"]["repository"] == "team/other"
    assert mount["target"]["size"] == len(layer)

    # HEAD, a 404 and a partial read make no event; a full blob GET and a tag delete do.
    assert (await client.head(f"/v2/team/app/manifests/{digest}")).status == 200
    assert (await client.get("/v2/team/app/manifests/nope")).status == 404
    ranged = await client.get(f"/v2/team/app/blobs/{sha256(layer)}", headers={"Range": "bytes=0-3"})
    assert ranged.status == 206
    assert (await client.get(f"/v2/team/app/blobs/{sha256(layer)}")).status == 200
    assert (await client.delete("/v2/team/app/manifests/1.0")).status == 202
    await wait_for(got, 6)
    await asyncio.sleep(0.2)
    assert [e["action"] for e in got[4:]] == ["pull", "delete"]
    assert got[4]["target"]["mediaType"] == "application/octet-stream"
    assert got[5]["target"] == {
        "repository": "team/app",
        "url": f"http://{got[5]['request']['host']}/v2/team/app/manifests/1.0",
        "tag": "1.0",
    }
    assert len({e["id"] for e in got}) == len(got)


async def test_no_events_middleware_without_notifications(origin: Any) -> None:
    assert events_middleware not in origin.app.middlewares
