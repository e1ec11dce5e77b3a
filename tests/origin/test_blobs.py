"""Blob GET/HEAD/DELETE against the real origin app: headers, Range, links, bad input."""

from __future__ import annotations

import os

import pytest

from origin import state
from regcore.digest import Digest

NAME = "team/app"


@pytest.fixture
async def pushed(origin):
    data = os.urandom(10_000)
    dg = await origin.push(NAME, data)
    return origin, data, dg


async def test_get_serves_bytes_with_registry_headers(pushed):
    origin, data, dg = pushed
    resp = await origin.client.get(f"/v2/{NAME}/blobs/{dg}")
    assert resp.status == 200
    assert await resp.read() == data
    h = resp.headers
    assert h["Docker-Content-Digest"] == dg
    assert h["ETag"] == f'"{dg}"'
    assert h["Content-Type"] == "application/octet-stream"
    assert h["Content-Length"] == str(len(data))
    assert h["Accept-Ranges"] == "bytes"
    assert "immutable" in h["Cache-Control"]
    assert h["Docker-Distribution-API-Version"] == "registry/2.0"
    assert origin.app[state.METRICS].value("blob_bytes_served") == len(data)


async def test_head_has_length_and_digest_but_no_body(pushed):
    origin, data, dg = pushed
    resp = await origin.client.head(f"/v2/{NAME}/blobs/{dg}")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(len(data))
    assert resp.headers["Docker-Content-Digest"] == dg
    assert await resp.read() == b""


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=9990-", 9990, 9999),
        ("bytes=-10", 9990, 9999),
        ("bytes=9000-20000", 9000, 9999),
    ],
)
async def test_range_answers_206_with_content_range(pushed, header, start, end):
    origin, data, dg = pushed
    resp = await origin.client.get(f"/v2/{NAME}/blobs/{dg}", headers={"Range": header})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    assert await resp.read() == data[start : end + 1]


@pytest.mark.parametrize(
    "header",
    [
        "bytes=10000-",
        "bytes=20000-30000",
        "bytes=a-b",
        "bytes=5-2",
        "items=0-1",
        "bytes=0-1,5-6",
        "bytes=-0",
    ],
)
async def test_bogus_or_unsatisfiable_range_is_416(pushed, header):
    origin, data, dg = pushed
    resp = await origin.client.get(f"/v2/{NAME}/blobs/{dg}", headers={"Range": header})
    assert resp.status == 416
    assert await origin.error_code(resp) == "RANGE_INVALID"
    assert resp.headers["Content-Range"] == f"bytes */{len(data)}"


async def test_if_none_match_on_digest_is_304(pushed):
    origin, _, dg = pushed
    resp = await origin.client.get(f"/v2/{NAME}/blobs/{dg}", headers={"If-None-Match": f'"{dg}"'})
    assert resp.status == 304
    assert resp.headers["ETag"] == f'"{dg}"'


async def test_blob_must_be_linked_in_the_repository(pushed):
    origin, _, dg = pushed
    resp = await origin.client.get(f"/v2/other/repo/blobs/{dg}")
    assert resp.status == 404
    assert await origin.error_code(resp) == "BLOB_UNKNOWN"
    head = await origin.client.head(f"/v2/other/repo/blobs/{dg}")
    assert head.status == 404


async def test_link_without_blob_file_is_unknown(origin):
    dg = Digest.of(b"never stored")
    await origin.app[state.REPOS].link_blob(NAME, dg)
    resp = await origin.client.get(f"/v2/{NAME}/blobs/{dg}")
    assert resp.status == 404 and await origin.error_code(resp) == "BLOB_UNKNOWN"


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:xyz",
        "sha256:" + "A" * 64,
        "sha256:" + "0" * 63,
        "md5:" + "0" * 32,
        "nodigest",
        "sha256:",
    ],
)
async def test_bad_digest_is_400_digest_invalid(origin, digest):
    resp = await origin.client.get(f"/v2/{NAME}/blobs/{digest}")
    assert resp.status == 400
    assert await origin.error_code(resp) == "DIGEST_INVALID"


@pytest.mark.parametrize(
    "raw_path",
    [
        "/v2/Team/App/blobs/",
        "/v2/team/../app/blobs/",
        "/v2/team%2Fapp/blobs/",
        "/v2/team//app/blobs/",
        "/v2/team/app-/blobs/",
        "/v2/-team/blobs/",
    ],
)
async def test_invalid_names_are_400_name_invalid(origin, raw_path):
    dg = str(Digest.of(b"x"))
    for path in (raw_path + dg, raw_path + "uploads/"):
        method = "POST" if path.endswith("/uploads/") else "GET"
        status, body = await origin.raw(method, path)
        assert status == 400, path
        assert body["errors"][0]["code"] == "NAME_INVALID"
    assert origin.upload_dirs() == []


async def test_delete_unlinks_then_404_then_repush(pushed):
    origin, data, dg = pushed
    resp = await origin.client.delete(f"/v2/{NAME}/blobs/{dg}")
    assert resp.status == 202
    assert resp.headers["Docker-Content-Digest"] == dg
    gone = await origin.client.get(f"/v2/{NAME}/blobs/{dg}")
    assert gone.status == 404 and await origin.error_code(gone) == "BLOB_UNKNOWN"
    again = await origin.client.delete(f"/v2/{NAME}/blobs/{dg}")
    assert again.status == 404 and await origin.error_code(again) == "BLOB_UNKNOWN"
    assert await origin.push(NAME, data, chunk=4096) == dg
    back = await origin.client.get(f"/v2/{NAME}/blobs/{dg}")
    assert back.status == 200 and await back.read() == data
    assert len(origin.blob_files()) == 1


async def test_delete_disabled_is_405_unsupported(origin_factory):
    origin = await origin_factory(overrides={"storage.delete.enabled": False})
    dg = await origin.push(NAME, b"keep me")
    resp = await origin.client.delete(f"/v2/{NAME}/blobs/{dg}")
    assert resp.status == 405
    assert await origin.error_code(resp) == "UNSUPPORTED"
    assert (await origin.client.get(f"/v2/{NAME}/blobs/{dg}")).status == 200
    # Cancelling an upload is not a deletion of content: still allowed.
    loc = await origin.start(NAME)
    assert (await origin.client.delete(loc)).status == 204
