"""What the edge answers a client, tried as a new user would: every answer names the server
without versions; a client's own mistakes (a malformed ``?ns=``, a bad pagination number the
upstream refuses) stay 4xx OCI errors; an upstream that is down or hung is a 502/504 whose
body names no internal URL. Real upstreams (docker-registry, the origin app) or a closed
port; an in-test server only where a fault must be injected (a hung upstream).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from harness.fixtures import ImageFactory
from harness.ports import free_port
from harness.registry import DockerRegistry
from origin.app import create_app as create_origin
from regcore.config import load_origin_config
from tests.edge.conftest import OCI_ACCEPT, MakeEdge, push


async def test_every_edge_answer_says_server_quayside_without_versions(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image()
    await push(docker_registry.url, "team/app", "v1", img)
    e = await make_edge({"local": docker_registry.url})
    layer = img.layers[0].digest
    answers = [
        await e.client.get("/v2/"),
        await e.client.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_ACCEPT}),
        await e.client.get(f"/v2/team/app/blobs/{layer}"),  # cold: streamed from the fill
        await e.client.get(f"/v2/team/app/blobs/{layer}"),  # warm: zero-copy from the cache
        await e.client.head(f"/v2/team/app/blobs/{layer}"),
        await e.client.get("/v2/team/app/tags/list"),
        await e.client.get("/v2/team/app/manifests/nope", headers={"Accept": OCI_ACCEPT}),
        await e.client.delete("/v2/team/app/manifests/v1"),
        await e.client.get("/metrics"),
        await e.client.get("/healthz"),
    ]
    assert [r.status for r in answers] == [200, 200, 200, 200, 200, 200, 404, 405, 200, 200]
    for resp in answers:
        await resp.read()
        assert resp.headers.getall("Server") == ["quayside"], resp


# -- a malformed ?ns= is the client's mistake: 400 NAME_INVALID, never a dropped connection ------


async def _raw(client: Any, target: str) -> tuple[int, dict[str, str], bytes]:
    """``GET target`` sent byte for byte (the query exactly as written); read to EOF."""
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head, f"{target}: the connection was dropped without an answer"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    "ns", ["%00", "local%00", "local%0a", "%0d%0aX-Evil:%201", "%7f", "%20local", "l%C3%B6cal"]
)
async def test_malformed_ns_is_400_name_invalid_json_without_a_traceback(
    make_edge: MakeEdge, caplog: pytest.LogCaptureFixture, ns: str
) -> None:
    e = await make_edge({"local": f"http://127.0.0.1:{free_port()}"})
    digest = "sha256:" + "a" * 64
    caplog.set_level("WARNING")
    for path in ("manifests/v1", f"blobs/{digest}", "tags/list", f"referrers/{digest}"):
        status, headers, body = await _raw(e.client, f"/v2/team/app/{path}?ns={ns}")
        assert status == 400, (path, body)
        assert headers["content-type"].startswith("application/json")
        assert [err["code"] for err in json.loads(body)["errors"]] == ["NAME_INVALID"]
        assert "oci-namespace" not in headers and "x-evil" not in headers
    assert [r for r in caplog.records if r.levelname == "ERROR" or r.exc_info] == []
    # a well-formed ns still selects its upstream and is echoed
    status, headers, _ = await _raw(e.client, "/v2/team/app/tags/list?ns=nowhere.example")
    assert status == 404 and headers["oci-namespace"] == "nowhere.example"


# -- an upstream down or hung: 502/504 whose body names no internal URL ----------------------------

DIGEST = "sha256:" + "b" * 64
PATHS = (
    "manifests/v1",
    f"manifests/{DIGEST}",
    f"blobs/{DIGEST}",
    "tags/list",
    f"referrers/{DIGEST}",
)


def _assert_names_no_upstream(body: bytes, port: int) -> None:
    text = body.decode()
    for leak in ("http://", "https://", "127.0.0.1", f":{port}"):
        assert leak not in text, text


async def test_upstream_down_is_502_unavailable_without_its_url(make_edge: MakeEdge) -> None:
    port = free_port()  # nothing listens there: connection refused
    e = await make_edge({"local": f"http://127.0.0.1:{port}"})
    for path in PATHS:
        resp = await e.client.get(f"/v2/team/app/{path}", headers={"Accept": OCI_ACCEPT})
        body = await resp.read()
        assert resp.status == 502, (path, body)
        assert [err["code"] for err in json.loads(body)["errors"]] == ["UNAVAILABLE"]
        _assert_names_no_upstream(body, port)


@pytest.fixture
async def hung_upstream() -> AsyncIterator[tuple[str, int]]:
    """A port that accepts connections and never answers (a hung upstream); closed after."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_upstream_hung_is_504_unavailable_without_its_url(
    make_edge: MakeEdge, hung_upstream: tuple[str, int]
) -> None:
    url, port = hung_upstream
    e = await make_edge({"local": url}, connect_timeout=0.3, read_timeout=0.3)
    for path in PATHS:
        resp = await e.client.get(f"/v2/team/app/{path}", headers={"Accept": OCI_ACCEPT})
        body = await resp.read()
        assert resp.status == 504, (path, body)
        assert [err["code"] for err in json.loads(body)["errors"]] == ["UNAVAILABLE"]
        _assert_names_no_upstream(body, port)


# -- an upstream's 4xx is the client's mistake passed on: 4xx with the upstream's code ------------


@pytest.fixture
async def origin_upstream(aiohttp_server: Any, tmp_path: Path) -> str:
    """The real origin application on a loopback port (an upstream that checks ``n``)."""
    config = load_origin_config(None, {}, {"storage.filesystem.rootdirectory": str(tmp_path)})
    server = await aiohttp_server(create_origin(config))
    return f"http://127.0.0.1:{server.port}"


@pytest.mark.parametrize("query", ["n=-1", "n=abc", "n=-1&last=v1"])
async def test_upstream_400_for_a_bad_page_size_reaches_the_client_as_400(
    origin_upstream: str, image_factory: ImageFactory, make_edge: MakeEdge, query: str
) -> None:
    await push(origin_upstream, "team/app", "v1", image_factory.image())
    e = await make_edge({"origin": origin_upstream})
    direct = await _get(f"{origin_upstream}/v2/team/app/tags/list?{query}")
    assert direct[0] == 400 and _codes(direct[1]) == ["PAGINATION_NUMBER_INVALID"]
    resp = await e.client.get(f"/v2/team/app/tags/list?{query}")
    body = await resp.read()
    assert resp.status == 400, body
    assert _codes(body) == ["PAGINATION_NUMBER_INVALID"]
    port = int(origin_upstream.rsplit(":", 1)[1])
    _assert_names_no_upstream(body, port)
    ok = await e.client.get("/v2/team/app/tags/list?n=1")
    assert ok.status == 200 and (await ok.json())["tags"] == ["v1"]


async def test_upstream_4xx_without_a_known_code_stays_a_4xx(
    make_edge: MakeEdge, aiohttp_server: Any
) -> None:
    """An upstream (or a proxy in front of it) refusing with a plain-text 400, or with an
    error code the edge does not know: the client gets that 4xx status, never a 502."""

    async def refuse(request: web.Request) -> web.Response:
        if request.query.get("n") == "7":
            return web.json_response(
                {"errors": [{"code": "FOO_TOO_MANY", "message": "x"}]}, status=422
            )
        return web.Response(status=400, text="400 Bad Request (from a proxy)")

    app = web.Application()
    app.router.add_get("/v2/{name:.+}/tags/list", refuse)
    server = await aiohttp_server(app)
    e = await make_edge({"up": f"http://127.0.0.1:{server.port}"})
    plain = await e.client.get("/v2/team/app/tags/list?n=-5")
    assert plain.status == 400 and _codes(await plain.read()) == ["UNKNOWN"]
    coded = await e.client.get("/v2/team/app/tags/list?n=7")
    assert coded.status == 422 and _codes(await coded.read()) == ["FOO_TOO_MANY"]


def _codes(body: bytes) -> list[str]:
    return [err["code"] for err in json.loads(body)["errors"]]


async def _get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.read()
