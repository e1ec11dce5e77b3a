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
from regcore.http import NAME, on_prepare_api_header, parse_range, standard_middlewares

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


# -- error_middleware -----------------------------------------------------------------------


async def test_registry_error_becomes_the_spec_envelope(aiohttp_client: ClientFactory) -> None:
    err = errors.TooManyRequests({"limit": 10}, headers={"Retry-After": "7"})
    client = await _client(aiohttp_client, {"/v2/team/app/tags/list": err})
    resp = await client.get("/v2/team/app/tags/list")
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "7"
    assert resp.headers[API_VERSION[0]] == API_VERSION[1]
    assert await _envelope(resp) == [
        {"code": "TOOMANYREQUESTS", "message": "too many requests", "detail": {"limit": 10}}
    ]


async def test_error_message_override_and_no_detail(aiohttp_client: ClientFactory) -> None:
    err = errors.Unsupported(message="manifest deletion is disabled")
    client = await _client(aiohttp_client, {"/v2/team/app/manifests/v1": err})
    resp = await client.get("/v2/team/app/manifests/v1")
    assert resp.status == 405
    assert await _envelope(resp) == [
        {"code": "UNSUPPORTED", "message": "manifest deletion is disabled"}
    ]


async def test_head_error_keeps_status_and_headers_without_a_body(
    aiohttp_client: ClientFactory,
) -> None:
    err = errors.BlobUnknown(DIGEST_A, headers={"X-Reason": "evicted"})
    client = await _client(aiohttp_client, {f"/v2/team/app/blobs/{DIGEST_A}": err})
    status, headers, body = await _raw(client, "HEAD", f"/v2/team/app/blobs/{DIGEST_A}")
    assert (status, body) == (404, b"")
    assert headers["x-reason"] == "evicted"
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    # No JSON announced: the answer promises no envelope it does not send.
    assert "content-type" not in headers and headers.get("content-length", "0") == "0"


async def test_unexpected_exception_is_500_unknown_without_internals(
    aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "postgres://admin:hunter2@db/registry"
    boom = RuntimeError(f"cannot connect to {secret}")
    client = await _client(aiohttp_client, {"/v2/team/app/tags/list": boom})
    with caplog.at_level("ERROR", logger="quayside.http"):
        resp = await client.get("/v2/team/app/tags/list")
    assert resp.status == 500
    raw = await resp.read()
    assert json.loads(raw) == {"errors": [{"code": "UNKNOWN", "message": "internal server error"}]}
    for leak in (b"hunter2", b"RuntimeError", b"Traceback", b"test_http"):
        assert leak not in raw
    # ... but the operator gets the traceback in the log.
    logged = [r for r in caplog.records if r.name == "quayside.http"]
    assert logged and logged[0].exc_info is not None and logged[0].exc_info[0] is RuntimeError


async def test_no_error_body_names_an_internal_url(aiohttp_client: ClientFactory) -> None:
    """URLs in messages and details (nested too) become ``<url>``; a 5xx's free-text detail
    (an upstream failure told from its exception, hosts and ports included) is not sent;
    a 5xx's structured detail is kept."""
    up = "http://10.0.0.7:5000/v2/team/app/manifests/v1"
    routes: dict[str, BaseException] = {
        "/v2/a/tags/list": errors.UpstreamUnavailable(f"GET {up} failed: ClientConnectorError"),
        "/v2/b/tags/list": errors.UpstreamTimeout(
            {"timeout_s": 3, "tried": [up]}, message=f"{up} timed out"
        ),
        "/v2/c/tags/list": errors.Denied({"realm": "https://auth.internal:8443/token?x=1"}),
        "/v2/d/tags/list": errors.RegistryErrors(
            [errors.NameUnknown(f"see {up}"), errors.Unavailable("Cannot connect to 10.0.0.7:5000")]
        ),
    }
    client = await _client(aiohttp_client, routes)
    got = {}
    for path in routes:
        resp = await client.get(path)
        raw = await resp.read()
        for leak in (b"10.0.0.7", b"auth.internal", b"://"):
            assert leak not in raw, raw
        got[path] = (resp.status, json.loads(raw)["errors"])
    assert got == {
        "/v2/a/tags/list": (
            502,
            [{"code": "UNAVAILABLE", "message": "upstream registry unavailable"}],
        ),
        "/v2/b/tags/list": (
            504,
            [
                {
                    "code": "UNAVAILABLE",
                    "message": "<url> timed out",
                    "detail": {"timeout_s": 3, "tried": ["<url>"]},
                }
            ],
        ),
        "/v2/c/tags/list": (
            403,
            [
                {
                    "code": "DENIED",
                    "message": "requested access to the resource is denied",
                    "detail": {"realm": "<url>"},
                }
            ],
        ),
        "/v2/d/tags/list": (
            404,
            [
                {
                    "code": "NAME_UNKNOWN",
                    "message": "repository name not known to registry",
                    "detail": "see <url>",
                },
                {"code": "UNAVAILABLE", "message": "service unavailable"},
            ],
        ),
    }


async def test_aiohttp_404_on_v2_paths_is_oci_json(aiohttp_client: ClientFactory) -> None:
    client = await _client(aiohttp_client, {"/v2/team/app/tags/list": errors.Denied()})
    resp = await client.get("/v2/no/such/route")
    assert resp.status == 404
    assert resp.headers[API_VERSION[0]] == API_VERSION[1]
    assert await _envelope(resp) == [{"code": "NAME_UNKNOWN", "message": "not found"}]
    # Outside /v2/ aiohttp's own answer stands.
    other = await client.get("/not-the-api")
    assert other.status == 404
    assert not other.headers.get("Content-Type", "").startswith("application/json")


async def test_aiohttp_405_is_oci_json(aiohttp_client: ClientFactory) -> None:
    client = await _client(aiohttp_client, {"/v2/team/app/tags/list": errors.Denied()})
    resp = await client.post("/v2/team/app/tags/list", data=b"")
    assert resp.status == 405
    assert await _envelope(resp) == [
        {"code": "UNSUPPORTED", "message": "method not allowed", "detail": "POST"}
    ]


async def test_aiohttp_413_is_oci_json(aiohttp_client: ClientFactory) -> None:
    async def read_body(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application(middlewares=standard_middlewares(), client_max_size=1024)
    app.router.add_put("/v2/team/app/blobs/uploads/u1", read_body)
    client = await aiohttp_client(app)
    small = await client.put("/v2/team/app/blobs/uploads/u1", data=b"x" * 1024)
    assert small.status == 204
    resp = await client.put("/v2/team/app/blobs/uploads/u1", data=b"x" * 4096)
    assert resp.status == 413
    assert await _envelope(resp) == [
        {"code": "SIZE_INVALID", "message": "content exceeds the allowed size"}
    ]


# -- path_guard_middleware ------------------------------------------------------------------


async def _echo_client(aiohttp_client: ClientFactory) -> TestClient:
    async def tags(request: web.Request) -> web.Response:
        return web.json_response({"name": request.match_info["name"]})

    app = web.Application(middlewares=standard_middlewares())
    app.router.add_get(f"/v2/{NAME}/tags/list", tags)
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    "target",
    [
        "/v2/team%2Fapp/tags/list",
        "/v2/team%2fapp/tags/list",
        "/v2/team/%2e%2e/tags/list",
        "/v2/team/%2E%2E/other/tags/list",
        "/v2/team/../other/tags/list",
        "/v2/../etc/tags/list",
        "/v2/team/./app/tags/list",
        "/v2/team%5Capp/tags/list",
        "/v2/team%00app/tags/list",
    ],
)
async def test_path_guard_rejects_escapes_with_name_invalid(
    aiohttp_client: ClientFactory, target: str
) -> None:
    client = await _echo_client(aiohttp_client)
    status, headers, body = await _raw(client, "GET", target)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["errors"][0]["code"] == "NAME_INVALID"
    status, _, body = await _raw(client, "HEAD", target)
    assert (status, body) == (400, b"")


async def test_path_guard_lets_names_with_slashes_and_dots_through(
    aiohttp_client: ClientFactory,
) -> None:
    client = await _echo_client(aiohttp_client)
    for name in ("team/app", "a/b/c", "my.org/app-1_x"):
        status, _, body = await _raw(client, "GET", f"/v2/{name}/tags/list?n=10")
        assert status == 200, name
        assert json.loads(body) == {"name": name}


# -- parse_range ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 1000, None),
        ("bytes=0-99", 1000, (0, 99)),
        ("bytes=999-999", 1000, (999, 999)),
        ("bytes=0-", 1000, (0, 999)),
        ("bytes=500-", 1000, (500, 999)),
        ("bytes=900-5000", 1000, (900, 999)),  # end past the size is clamped
        ("bytes=-100", 1000, (900, 999)),  # suffix: the last 100 bytes
        ("bytes=-1", 1000, (999, 999)),
        ("bytes=-5000", 1000, (0, 999)),  # suffix longer than the blob: all of it
        (" bytes = 10 - 19 ", 1000, (10, 19)),
        ("bytes=0-0", 1, (0, 0)),
    ],
)
def test_parse_range_satisfiable(
    header: str | None, size: int, expected: tuple[int, int] | None
) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=1000-", 1000),  # starts at the end
        ("bytes=1000-2000", 1000),  # entirely beyond
        ("bytes=5-2", 1000),  # reversed
        ("bytes=-0", 1000),  # empty suffix
        ("bytes=0-", 0),  # empty blob
        ("bytes=-5", 0),
        ("bytes=0-1,5-6", 1000),  # multi-range refused
        ("bytes=0-1, 5-6", 1000),
        ("bytes=", 1000),
        ("bytes=-", 1000),
        ("bytes=a-b", 1000),
        ("bytes=1.5-2", 1000),
        ("bytes=+1-2", 1000),
        ("items=0-1", 1000),
        ("0-1", 1000),
        ("", 1000),
        ("garbage", 1000),
    ],
)
def test_parse_range_unsatisfiable_or_malformed_is_416(header: str, size: int) -> None:
    with pytest.raises(errors.RangeInvalid) as info:
        parse_range(header, size)
    assert info.value.status == 416
    assert info.value.code == "RANGE_INVALID"
    assert info.value.headers == {"Content-Range": f"bytes */{size}"}


def test_parse_range_detail_is_truncated() -> None:
    header = "bytes=" + "9" * 500 + "-"
    with pytest.raises(errors.RangeInvalid) as info:
        parse_range(header, 10)
    assert info.value.detail == header[:64]


async def test_range_error_reaches_the_client_as_416_with_content_range(
    aiohttp_client: ClientFactory,
) -> None:
    async def blob(request: web.Request) -> web.Response:
        start, end = parse_range(request.headers.get("Range"), 10) or (0, 9)
        return web.Response(status=206, body=b"0123456789"[start : end + 1])

    app = web.Application(middlewares=standard_middlewares())
    app.router.add_get(f"/v2/{NAME}/blobs/{{digest}}", blob)
    client = await aiohttp_client(app)
    ok = await client.get(f"/v2/team/app/blobs/{DIGEST_A}", headers={"Range": "bytes=-3"})
    assert (ok.status, await ok.read()) == (206, b"789")
    resp = await client.get(f"/v2/team/app/blobs/{DIGEST_A}", headers={"Range": "bytes=10-"})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == "bytes */10"
    assert [e["code"] for e in await _envelope(resp)] == ["RANGE_INVALID"]


# -- Server header -----------------------------------------------------------------------------


async def test_every_answer_names_the_server_without_versions(
    aiohttp_client: ClientFactory,
) -> None:
    """``Server: quayside`` on plain, streamed, error, HEAD and aiohttp's own answers: never
    the Python and aiohttp versions a scanner would match against advisories."""

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        await resp.write(b"chunk")
        return resp

    app = web.Application(middlewares=standard_middlewares())
    app.on_response_prepare.append(on_prepare_api_header)
    app.router.add_get("/v2/", _ok)
    app.router.add_get("/v2/stream", streamed)
    app.router.add_get("/v2/team/app/tags/list", _raiser(errors.Denied()))
    client = await aiohttp_client(app)
    answers = [
        await client.get("/v2/"),
        await client.head("/v2/"),
        await client.get("/v2/stream"),
        await client.get("/v2/team/app/tags/list"),
        await client.head("/v2/team/app/tags/list"),
        await client.get("/v2/no/such/route"),
        await client.post("/v2/"),
        await client.get("/elsewhere"),
    ]
    assert [r.headers.getall("Server") for r in answers] == [["quayside"]] * len(answers)
    status, headers, _ = await _raw(client, "GET", "/v2/%2e%2e/x/tags/list")
    assert status == 400 and headers["server"] == "quayside"


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({})
