"""regcore.http and regcore.errors on a real aiohttp server: the error envelope (one error or
several), HEAD answers, unexpected exceptions, aiohttp's own 404/405/413, the path guard, and
Range parsing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from regcore import errors
from regcore.http import standard_middlewares

ClientFactory = Callable[..., Awaitable[TestClient]]
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def _raiser(exc: BaseException) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise exc

    return handler


async def _client(aiohttp_client: ClientFactory, routes: dict[str, BaseException]) -> TestClient:
    """An app with the standard middlewares and one GET (and HEAD) route per path raising."""
    app = web.Application(middlewares=standard_middlewares())
    for path, exc in routes.items():
        app.router.add_get(path, _raiser(exc))
    return await aiohttp_client(app)


async def _raw(client: TestClient, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """Send ``method target`` byte for byte (no client-side path normalization); read to EOF."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(f"{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


async def _envelope(resp: Any) -> list[dict[str, Any]]:
    assert resp.headers["Content-Type"].startswith("application/json")
    body = json.loads(await resp.read())
    assert list(body) == ["errors"]
    return body["errors"]


# -- several errors in one envelope ---------------------------------------------------------


def _missing(*digests: str) -> errors.RegistryErrors:
    return errors.RegistryErrors(errors.ManifestBlobUnknown({"digest": d}) for d in digests)


async def test_registry_errors_render_every_entry_in_order(aiohttp_client: ClientFactory) -> None:
    client = await _client(
        aiohttp_client, {"/v2/team/app/manifests/v1": _missing(DIGEST_A, DIGEST_B)}
    )
    resp = await client.get("/v2/team/app/manifests/v1")
    assert resp.status == 400
    assert resp.headers[API_VERSION[0]] == API_VERSION[1]
    assert await _envelope(resp) == [
        {
            "code": "MANIFEST_BLOB_UNKNOWN",
            "message": "manifest references a manifest or blob unknown to registry",
            "detail": {"digest": DIGEST_A},
        },
        {
            "code": "MANIFEST_BLOB_UNKNOWN",
            "message": "manifest references a manifest or blob unknown to registry",
            "detail": {"digest": DIGEST_B},
        },
    ]


async def test_registry_errors_take_status_and_headers_from_the_first(
    aiohttp_client: ClientFactory,
) -> None:
    challenge = 'Bearer realm="https://auth.example/token",service="registry"'
    multi = errors.RegistryErrors(
        [
            errors.Unauthorized(headers={"WWW-Authenticate": challenge}),
            errors.BlobUnknown(DIGEST_A, headers={"X-Second": "not sent"}),
        ]
    )
    client = await _client(aiohttp_client, {"/v2/team/app/blobs/x": multi})
    resp = await client.get("/v2/team/app/blobs/x")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == challenge
    assert "X-Second" not in resp.headers
    assert [e["code"] for e in await _envelope(resp)] == ["UNAUTHORIZED", "BLOB_UNKNOWN"]

    status, headers, body = await _raw(client, "HEAD", "/v2/team/app/blobs/x")
    assert (status, body) == (401, b"")
    assert headers["www-authenticate"] == challenge
    assert "content-type" not in headers and headers.get("content-length", "0") == "0"


def test_registry_errors_flatten_and_expose_the_first() -> None:
    inner = _missing(DIGEST_A, DIGEST_B)
    outer = errors.RegistryErrors([inner, errors.NameInvalid("bad/Name")])
    assert [e.code for e in outer.errors] == [
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_BLOB_UNKNOWN",
        "NAME_INVALID",
    ]
    assert (outer.code, outer.status, outer.detail) == (
        "MANIFEST_BLOB_UNKNOWN",
        400,
        {"digest": DIGEST_A},
    )
    assert isinstance(outer, errors.RegistryError)
    assert len(json.loads(errors.error_body(outer))["errors"]) == 3
    assert DIGEST_B in str(outer) and "NAME_INVALID" in str(outer)
    # The class keeps the base defaults; only instances take the first error's values.
    assert errors.RegistryErrors.status == 500


def test_registry_errors_of_keeps_a_single_error_and_refuses_none() -> None:
    single = errors.ManifestBlobUnknown({"digest": DIGEST_A})
    assert errors.RegistryErrors.of([single]) is single
    both = errors.RegistryErrors.of([single, errors.ManifestBlobUnknown({"digest": DIGEST_B})])
    assert isinstance(both, errors.RegistryErrors) and len(both.errors) == 2
    with pytest.raises(ValueError):
        errors.RegistryErrors([])
    with pytest.raises(ValueError):
        errors.RegistryErrors.of([])
