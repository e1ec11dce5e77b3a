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


async def test_webhook_redirects_stay_on_the_endpoints_origin(
    origin_factory: Any, aiohttp_server: Any
) -> None:
    """A 307 to the same origin is followed with the headers and the body; a 307 to another
    host is a failed delivery: the hook's token and the events never reach that host."""
    stolen: list[dict[str, str]] = []

    async def steal(request: web.Request) -> web.Response:
        stolen.append(dict(request.headers))
        return web.Response(status=200)

    elsewhere_app = web.Application()
    elsewhere_app.router.add_post("/steal", steal)
    elsewhere = await aiohttp_server(elsewhere_app)

    got: list[tuple[str, str | None]] = []
    away_hits: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        for event in (await request.json())["events"]:
            got.append((event["action"], request.headers.get("X-Hook-Token")))
        return web.Response(status=202)

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/hook")

    async def away(request: web.Request) -> web.Response:
        away_hits.append(1)
        raise web.HTTPTemporaryRedirect(str(elsewhere.make_url("/steal")))

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/moved", moved)
    app.router.add_post("/away", away)
    home = await aiohttp_server(app)
    headers = {"X-Hook-Token": "hook-s3cret"}
    endpoints = [
        {"name": n, "url": str(home.make_url(f"/{n}")), "headers": headers, "backoff": "100ms"}
        for n in ("moved", "away")
    ]
    origin = await origin_factory(overrides={"notifications": {"endpoints": endpoints}})
    status, _ = await push_image(origin.client, "team/app", "1.0", {}, seed="redir")
    assert status == 201
    await wait_for(got, 3)  # config, layer, manifest through the same-origin redirect
    assert {token for _, token in got} == {"hook-s3cret"}
    for _ in range(100):
        if len(away_hits) >= 2:  # tried, refused, tried again: still nothing elsewhere
            break
        await asyncio.sleep(0.02)
    assert len(away_hits) >= 2 and stolen == []


async def test_put_by_digest_with_tag_parameters_makes_one_push_event_per_tag(
    origin_factory: Any, aiohttp_server: Any
) -> None:
    """``?tag=`` on a PUT by digest: one push event per tag (each ``target.tag`` set, the
    digest the same), as a PUT by each tag would make; without ``?tag=`` one event, no tag."""
    server, got = await receiver(aiohttp_server)
    endpoint = {"name": "hook", "url": str(server.make_url("/hook")), "backoff": "100ms"}
    origin = await origin_factory(overrides={"notifications": {"endpoints": [endpoint]}})
    digest = sha256(image("pt")[2])
    status, _ = await push_image(origin.client, "team/pt", f"{digest}?tag=v9&tag=v10", {}, "pt")
    assert status == 201
    await wait_for(got, 4)  # two blob pushes, then the manifest's two
    await asyncio.sleep(0.2)
    manifests = [e for e in got if "/manifests/" in e["target"]["url"]]
    assert [(e["action"], e["target"]["digest"], e["target"].get("tag")) for e in manifests] == [
        ("push", digest, "v9"),
        ("push", digest, "v10"),
    ]
    assert len(got) == 4 and len({e["id"] for e in got}) == 4

    status, _ = await push_image(origin.client, "team/pt", digest, {}, "pt")
    assert status == 201
    await wait_for(got, 7)
    await asyncio.sleep(0.2)
    assert len(got) == 7
    assert got[-1]["action"] == "push" and "tag" not in got[-1]["target"]
    assert got[-1]["target"]["digest"] == digest
