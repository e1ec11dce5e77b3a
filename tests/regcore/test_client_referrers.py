"""RegistryClient.list_referrers against in-test servers: ``Link`` pages followed (bounded),
a 404 means "no referrers API" (None), other failures raise."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from regcore import errors
from regcore.client import RegistryClient

SUBJECT = "sha256:" + "a" * 64
PATH = f"/v2/team/app/referrers/{SUBJECT}"


def _desc(n: int) -> dict[str, object]:
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{n:064x}"}


async def test_pages_are_followed_and_malformed_entries_left_out(
    aiohttp_server: AiohttpServer,
) -> None:
    async def referrers(request: web.Request) -> web.Response:
        page = request.query.get("page")
        if page is None:
            body = {"manifests": [_desc(1), {"digest": 7}, "junk"]}
            return web.json_response(body, headers={"Link": f'<{PATH}?page=2>; rel="next"'})
        return web.json_response({"manifests": [_desc(2)]})

    app = web.Application()
    app.router.add_get(PATH, referrers)
    server = await aiohttp_server(app)
    async with RegistryClient(str(server.make_url(""))) as client:
        found = await client.list_referrers("team/app", SUBJECT)
        assert [d["digest"] for d in found or []] == [_desc(1)["digest"], _desc(2)["digest"]]


async def test_404_is_no_api_and_other_failures_raise(aiohttp_server: AiohttpServer) -> None:
    status = {"code": 404}

    async def referrers(request: web.Request) -> web.Response:
        return web.Response(status=status["code"], text="404 page not found\n")

    app = web.Application()
    app.router.add_get(PATH, referrers)
    server = await aiohttp_server(app)
    async with RegistryClient(str(server.make_url("")), retries=0) as client:
        assert await client.list_referrers("team/app", SUBJECT) is None
        status["code"] = 403
        with pytest.raises(errors.Denied):
            await client.list_referrers("team/app", SUBJECT)


async def test_a_link_loop_stops_after_max_pages(aiohttp_server: AiohttpServer) -> None:
    calls = []

    async def referrers(request: web.Request) -> web.Response:
        calls.append(request.path_qs)
        body = json.dumps({"manifests": [_desc(len(calls))]})
        return web.Response(
            text=body, content_type="application/json", headers={"Link": f'<{PATH}>; rel="next"'}
        )

    app = web.Application()
    app.router.add_get(PATH, referrers)
    server = await aiohttp_server(app)
    async with RegistryClient(str(server.make_url(""))) as client:
        found = await client.list_referrers("team/app", SUBJECT, max_pages=3)
    assert len(calls) == 3 and len(found or []) == 3
