"""Blob uploads against the real origin app: sessions, chunks, commit, mount, failures.

Each refused request is checked for the spec's status and error code and for an untouched
blob tree.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid

from origin import state
from regcore.digest import Digest

NAME = "team/app"
HEX_ID = re.compile(r"[0-9a-f]{32}")


async def test_post_opens_session_with_location_range_and_uuid(origin):
    resp = await origin.client.post(f"/v2/{NAME}/blobs/uploads/")
    assert resp.status == 202
    loc = resp.headers["Location"]
    upload_id = resp.headers["Docker-Upload-UUID"]
    assert HEX_ID.fullmatch(upload_id)
    assert loc == f"/v2/{NAME}/blobs/uploads/{upload_id}"
    assert resp.headers["Range"] == "0-0"
    assert resp.headers["Content-Length"] == "0"
    [d] = origin.upload_dirs(NAME)
    assert d.name == upload_id and (d / "startedat").is_file() and (d / "data").is_file()
    assert origin.app[state.METRICS].value("upload_sessions_started") == 1


async def test_monolithic_post_with_digest_commits_and_links(origin):
    data = os.urandom(100_000)
    dg = origin.sha256(data)
    resp = await origin.client.post(f"/v2/{NAME}/blobs/uploads/", params={"digest": dg}, data=data)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == f"/v2/{NAME}/blobs/{dg}"
    assert resp.headers["Docker-Content-Digest"] == dg
    got = await origin.client.get(f"/v2/{NAME}/blobs/{dg}")
    assert got.status == 200 and await got.read() == data
    assert origin.upload_dirs() == [] and origin.incomplete_files() == []
    assert origin.app[state.METRICS].value("blobs_committed", {"source": "monolithic"}) == 1


async def test_monolithic_post_with_wrong_digest_leaves_store_untouched(origin):
    data = b"some bytes"
    resp = await origin.client.post(
        f"/v2/{NAME}/blobs/uploads/", params={"digest": origin.sha256(b"other")}, data=data
    )
    assert resp.status == 400
    assert await origin.error_code(resp) == "DIGEST_INVALID"
    assert origin.blob_files() == [] and origin.incomplete_files() == []


async def test_chunked_upload_in_order_reports_range_after_each_chunk(origin):
    data = os.urandom(300_001)
    loc = await origin.start(NAME)
    for off in range(0, len(data), 100_000):
        chunk = data[off : off + 100_000]
        resp = await origin.patch(loc, chunk, start=off)
        assert resp.status == 202, await resp.text()
        assert resp.headers["Range"] == f"0-{off + len(chunk) - 1}"
        status = await origin.client.get(loc)
        assert status.status == 204
        assert status.headers["Range"] == f"0-{off + len(chunk) - 1}"
        assert status.headers["Location"] == loc
    dg = origin.sha256(data)
    resp = await origin.client.put(loc, params={"digest": dg})
    assert resp.status == 201
    assert resp.headers["Location"] == f"/v2/{NAME}/blobs/{dg}"
    assert resp.headers["Docker-Content-Digest"] == dg
    got = await origin.client.get(f"/v2/{NAME}/blobs/{dg}")
    assert await got.read() == data
    assert len(origin.blob_files()) == 1 and origin.upload_dirs() == []
    m = origin.app[state.METRICS]
    assert m.value("upload_sessions_completed") == 1 and m.value("upload_bytes") == len(data)


async def test_patch_without_content_range_streams_at_current_offset(origin):
    loc = await origin.start(NAME)
    r1 = await origin.patch(loc, b"a" * 10)
    r2 = await origin.patch(loc, b"b" * 5)
    assert (r1.status, r2.status) == (202, 202)
    assert r2.headers["Range"] == "0-14"

    async def gen():
        for _ in range(4):
            yield b"c" * 1000

    r3 = await origin.client.patch(loc, data=gen())  # chunked transfer, no Content-Length
    assert r3.status == 202 and r3.headers["Range"] == "0-4014"
    data = b"a" * 10 + b"b" * 5 + b"c" * 4000
    resp = await origin.client.put(loc, params={"digest": origin.sha256(data)})
    assert resp.status == 201


async def test_put_with_final_chunk_in_body(origin):
    loc = await origin.start(NAME)
    assert (await origin.patch(loc, b"head-", start=0)).status == 202
    data = b"head-tail"
    resp = await origin.client.put(loc, params={"digest": origin.sha256(data)}, data=b"tail")
    assert resp.status == 201
    got = await origin.client.get(resp.headers["Location"])
    assert await got.read() == data


async def test_out_of_order_chunk_is_416_and_upload_resumes_after_status(origin):
    data = os.urandom(30_000)
    loc = await origin.start(NAME)
    assert (await origin.patch(loc, data[:10_000], start=0)).status == 202
    # A gap (skips 10000-19999) and an overlap are both refused with the current Range.
    for start in (20_000, 5_000, 0):
        bad = await origin.patch(loc, data[start : start + 10_000], start=start)
        assert bad.status == 416
        assert await origin.error_code(bad) == "RANGE_INVALID"
        assert bad.headers["Range"] == "0-9999"
        assert bad.headers["Location"] == loc
    # The client asks where to resume, and does.
    status = await origin.client.get(loc)
    resume = int(status.headers["Range"].split("-")[1]) + 1
    assert resume == 10_000
    assert (await origin.patch(loc, data[resume:], start=resume)).status == 202
    resp = await origin.client.put(loc, params={"digest": origin.sha256(data)})
    assert resp.status == 201
    assert await (await origin.client.get(resp.headers["Location"])).read() == data


async def test_closing_put_whose_content_range_does_not_continue_is_416_and_changes_nothing(
    origin,
):
    """The spec: "If the final chunk is uploaded out of order, the registry MUST respond with
    a 416". A gap, an overlap, a restart at 0, a range the body does not fill and a malformed
    range are refused before any byte is read; the session keeps its offset and its bytes,
    nothing is committed, and the right closing PUT then completes the upload."""
    data = os.urandom(30_000)
    loc = await origin.start(NAME)
    assert (await origin.patch(loc, data[:10_000], start=0)).status == 202
    dg = origin.sha256(data)
    attempts = [
        (data[20_000:], "20000-29999"),  # a gap
        (data[5_000:], "5000-29999"),  # an overlap
        (data, "0-29999"),  # the whole blob again
        (data[10_000:], "10000-30999"),  # Content-Length disagrees with the range
        (data[10_000:], "10000-"),  # malformed
    ]
    for body, content_range in attempts:
        bad = await origin.client.put(
            loc, params={"digest": dg}, data=body, headers={"Content-Range": content_range}
        )
        assert bad.status == 416, (content_range, await bad.text())
        assert await origin.error_code(bad) == "RANGE_INVALID"
        assert bad.headers["Range"] == "0-9999" and bad.headers["Location"] == loc
        assert origin.blob_files() == []
        status = await origin.client.get(loc)
        assert status.status == 204 and status.headers["Range"] == "0-9999", content_range
    resp = await origin.client.put(
        loc, params={"digest": dg}, data=data[10_000:], headers={"Content-Range": "10000-29999"}
    )
    assert resp.status == 201, await resp.text()
    assert await (await origin.client.get(resp.headers["Location"])).read() == data
    assert origin.upload_dirs() == []


async def test_bogus_content_range_is_416(origin):
    loc = await origin.start(NAME)
    assert (await origin.patch(loc, b"12345", start=0)).status == 202
    for header in ("abc", "5-3", "bytes */5", "-5", "5-"):
        resp = await origin.patch(loc, b"xx", headers={"Content-Range": header})
        assert resp.status == 416, header
        assert await origin.error_code(resp) == "RANGE_INVALID"
        assert resp.headers["Range"] == "0-4"
    # Content-Length that disagrees with the range.
    resp = await origin.patch(loc, b"xyz", headers={"Content-Range": "5-9"})
    assert resp.status == 416
    assert (await origin.client.get(loc)).headers["Range"] == "0-4"


async def test_wrong_digest_on_put_cancels_session_and_leaves_blobs_untouched(origin):
    loc = await origin.start(NAME)
    assert (await origin.patch(loc, b"real bytes", start=0)).status == 202
    resp = await origin.client.put(loc, params={"digest": origin.sha256(b"fake bytes")})
    assert resp.status == 400
    assert await origin.error_code(resp) == "DIGEST_INVALID"
    assert origin.blob_files() == []
    assert origin.upload_dirs() == []
    gone = await origin.client.get(loc)
    assert gone.status == 404 and await origin.error_code(gone) == "BLOB_UPLOAD_UNKNOWN"
    m = origin.app[state.METRICS]
    assert m.value("upload_sessions_cancelled", {"reason": "digest_invalid"}) == 1


async def test_put_without_or_with_malformed_digest_is_digest_invalid(origin):
    loc = await origin.start(NAME)
    for params in ({}, {"digest": "sha256:xyz"}, {"digest": "md5:" + "0" * 32}):
        resp = await origin.client.put(loc, params=params)
        assert resp.status == 400
        assert await origin.error_code(resp) == "DIGEST_INVALID"
    assert (await origin.client.get(loc)).status == 204  # session still usable


async def test_sha512_digest_is_accepted(origin):
    data = os.urandom(5000)
    loc = await origin.start(NAME)
    assert (await origin.patch(loc, data, start=0)).status == 202
    dg = "sha512:" + hashlib.sha512(data).hexdigest()
    resp = await origin.client.put(loc, params={"digest": dg})
    assert resp.status == 201
    got = await origin.client.get(f"/v2/{NAME}/blobs/{dg}")
    assert await got.read() == data


async def test_cancelled_upload_leaves_nothing(origin):
    loc = await origin.start(NAME)
    assert (await origin.patch(loc, b"x" * 1000, start=0)).status == 202
    resp = await origin.client.delete(loc)
    assert resp.status == 204
    assert origin.upload_dirs() == [] and origin.blob_files() == []
    again = await origin.client.delete(loc)
    assert again.status == 404 and await origin.error_code(again) == "BLOB_UPLOAD_UNKNOWN"
    patch = await origin.patch(loc, b"y", start=1000)
    assert patch.status == 404 and await origin.error_code(patch) == "BLOB_UPLOAD_UNKNOWN"


async def test_unknown_foreign_and_malformed_upload_ids(origin):
    loc = await origin.start(NAME)
    upload_id = loc.rsplit("/", 1)[1]
    unknown = uuid.uuid4().hex
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        resp = await origin.client.request(
            method, f"/v2/{NAME}/blobs/uploads/{unknown}", params={"digest": origin.sha256(b"")}
        )
        assert resp.status == 404, method
        assert await origin.error_code(resp) == "BLOB_UPLOAD_UNKNOWN"
    # A session belongs to its repository.
    foreign = await origin.client.get(f"/v2/other/repo/blobs/uploads/{upload_id}")
    assert foreign.status == 404 and await origin.error_code(foreign) == "BLOB_UPLOAD_UNKNOWN"
    for bad in ("not-a-uuid", "_uploads", upload_id.upper(), "..%2F..%2Fblobs"):
        resp = await origin.client.get(f"/v2/{NAME}/blobs/uploads/{bad}")
        assert resp.status in (400, 404), bad
        assert await origin.error_code(resp) in ("BLOB_UPLOAD_UNKNOWN", "NAME_INVALID")


async def test_blob_is_not_served_before_the_upload_completes(origin):
    data = os.urandom(2000)
    dg = origin.sha256(data)
    loc = await origin.start(NAME)
    assert (await origin.patch(loc, data[:1000], start=0)).status == 202
    for method in ("GET", "HEAD"):
        resp = await origin.client.request(method, f"/v2/{NAME}/blobs/{dg}")
        assert resp.status == 404
    assert (
        await origin.error_code(await origin.client.get(f"/v2/{NAME}/blobs/{dg}")) == "BLOB_UNKNOWN"
    )
    assert (await origin.patch(loc, data[1000:], start=1000)).status == 202
    assert (await origin.client.put(loc, params={"digest": dg})).status == 201
    assert (await origin.client.get(f"/v2/{NAME}/blobs/{dg}")).status == 200


async def test_cross_repository_mount_links_existing_blob(origin):
    data = os.urandom(4096)
    dg = await origin.push("src/repo", data)
    resp = await origin.client.post(
        "/v2/dst/repo/blobs/uploads/", params={"mount": dg, "from": "src/repo"}
    )
    assert resp.status == 201
    assert resp.headers["Location"] == f"/v2/dst/repo/blobs/{dg}"
    assert resp.headers["Docker-Content-Digest"] == dg
    got = await origin.client.get(f"/v2/dst/repo/blobs/{dg}")
    assert await got.read() == data
    assert len(origin.blob_files()) == 1
    assert origin.app[state.METRICS].value("blobs_mounted") == 1


async def test_mount_falls_back_to_a_new_session_when_source_lacks_the_blob(origin):
    dg = await origin.push("src/repo", b"abc")
    cases = [
        {"mount": origin.sha256(b"missing"), "from": "src/repo"},
        {"mount": dg, "from": "empty/repo"},
        {"mount": dg, "from": "Bad/Name"},
        {"mount": "sha256:nope", "from": "src/repo"},
    ]
    for params in cases:
        resp = await origin.client.post("/v2/dst/repo/blobs/uploads/", params=params)
        assert resp.status == 202, params
        assert "Docker-Upload-UUID" in resp.headers
    assert (await origin.client.get(f"/v2/dst/repo/blobs/{dg}")).status == 404


async def test_twenty_concurrent_pushes_of_one_blob_leave_one_copy(origin):
    data = os.urandom(256 * 1024)
    names = [f"team/app{i}" for i in range(20)]
    digests = await asyncio.gather(*(origin.push(n, data, chunk=64 * 1024) for n in names))
    assert set(digests) == {origin.sha256(data)}
    [blob] = origin.blob_files()
    assert blob.read_bytes() == data
    assert origin.upload_dirs() == [] and origin.incomplete_files() == []
    for n in names:
        assert (await origin.client.head(f"/v2/{n}/blobs/{digests[0]}")).status == 200


async def test_concurrent_patches_on_one_session_serialize(origin):
    loc = await origin.start(NAME)
    chunk = os.urandom(512 * 1024)
    r1, r2 = await asyncio.gather(
        origin.patch(loc, chunk, start=0), origin.patch(loc, chunk, start=0)
    )
    assert sorted([r1.status, r2.status]) == [202, 416]
    assert (await origin.client.get(loc)).headers["Range"] == f"0-{len(chunk) - 1}"
    resp = await origin.client.put(loc, params={"digest": origin.sha256(chunk)})
    assert resp.status == 201


async def test_blob_size_limit_is_413_and_session_keeps_its_offset(origin_factory):
    origin = await origin_factory(overrides={"quayside.limits.max_blob_bytes": 1000})
    loc = await origin.start(NAME)
    assert (await origin.patch(loc, b"a" * 600, start=0)).status == 202
    resp = await origin.patch(loc, b"b" * 600, start=600)
    assert resp.status == 413 and await origin.error_code(resp) == "SIZE_INVALID"

    async def gen():
        for _ in range(6):
            yield b"c" * 100

    streamed = await origin.client.patch(loc, data=gen())
    assert streamed.status == 413
    assert (await origin.client.get(loc)).headers["Range"] == "0-599"
    mono = await origin.client.post(
        f"/v2/{NAME}/blobs/uploads/",
        params={"digest": origin.sha256(b"z" * 2000)},
        data=b"z" * 2000,
    )
    assert mono.status == 413
    assert origin.blob_files() == [] and origin.incomplete_files() == []


async def test_locations_are_absolute_under_http_host(origin_factory):
    origin = await origin_factory(overrides={"http.host": "https://registry.example.com"})
    resp = await origin.client.post(f"/v2/{NAME}/blobs/uploads/")
    loc = resp.headers["Location"]
    assert loc.startswith(f"https://registry.example.com/v2/{NAME}/blobs/uploads/")
    path = loc.removeprefix("https://registry.example.com")
    assert (await origin.patch(path, b"hi", start=0)).status == 202
    done = await origin.client.put(path, params={"digest": origin.sha256(b"hi")})
    assert (
        done.headers["Location"]
        == f"https://registry.example.com/v2/{NAME}/blobs/{origin.sha256(b'hi')}"
    )


async def test_session_survives_app_restart_and_rehashes_from_disk(origin_factory, tmp_path):
    root = tmp_path / "shared"
    first = await origin_factory(root=root)
    data = os.urandom(3 * 1024 * 1024 + 7)
    loc = await first.start(NAME)
    assert (await first.patch(loc, data[:2_000_000], start=0)).status == 202
    await first.client.close()

    second = await origin_factory(root=root)
    status = await second.client.get(loc)
    assert status.status == 204 and status.headers["Range"] == "0-1999999"
    assert (await second.patch(loc, data[2_000_000:], start=2_000_000)).status == 202
    resp = await second.client.put(loc, params={"digest": origin_sha(data)})
    assert resp.status == 201
    assert await (await second.client.get(resp.headers["Location"])).read() == data


async def test_purge_removes_stale_sessions_only(origin_factory):
    now = [1_000_000.0]
    origin = await origin_factory(clock=lambda: now[0])
    old = await origin.start(NAME)
    now[0] += 3600
    fresh = await origin.start(NAME)
    purged = await origin.app[state.UPLOADS].purge(1800)
    assert [u for _, u in purged] == [old.rsplit("/", 1)[1]]
    assert (await origin.client.get(old)).status == 404
    assert (await origin.client.get(fresh)).status == 204


def origin_sha(data: bytes) -> str:
    return str(Digest.of(data))


async def test_client_disconnect_mid_chunk_keeps_a_resumable_prefix(origin):
    data = os.urandom(4 * 1024 * 1024)
    loc = await origin.start(NAME)
    server = origin.client.server
    _reader, writer = await asyncio.open_connection(server.host, server.port)
    head = (
        f"PATCH {loc} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(data)}\r\nContent-Range: 0-{len(data) - 1}\r\n\r\n"
    )
    writer.write(head.encode() + data[: 5 * 512 * 1024])
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()  # gone before the chunk is complete
    await writer.wait_closed()
    offset = None
    for _ in range(50):  # the server notices the disconnect asynchronously
        status = await origin.client.get(loc)
        assert status.status == 204
        end = int(status.headers["Range"].split("-")[1])
        offset = end + 1 if end else 0
        if not origin.app[state.UPLOADS].in_use(NAME, loc.rsplit("/", 1)[1]):
            break
        await asyncio.sleep(0.02)
    assert offset is not None and offset <= 5 * 512 * 1024
    resp = await origin.patch(loc, data[offset:], start=offset)
    assert resp.status == 202, await resp.text()
    done = await origin.client.put(loc, params={"digest": origin_sha(data)})
    assert done.status == 201
    assert await (await origin.client.get(done.headers["Location"])).read() == data
