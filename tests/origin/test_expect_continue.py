"""``Expect: 100-continue`` on the origin: the final status instead of 100 when the request is
refused (RFC 9110 section 10.1.1), 100 only when the body is going to be read.

The real origin application (htpasswd users and roles of :mod:`tests.origin.authfixtures`, a
1 MiB quota on ``team``) on a loopback port; each request is written byte for byte on a raw
socket, so the tests see whether a ``100 Continue`` came before the answer, and the body is
sent only after one did. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from regcore.unreadbody import LINGER
from tests.expect100 import raw_head, refused, send_expecting
from tests.origin.authfixtures import USERS, auth_overrides, basic, image, sha256
from tests.origin.conftest import OriginFactory, OriginUnderTest

ALICE = basic("alice", USERS["alice"])  # admin on team/*
CAROL = basic("carol", USERS["carol"])  # viewer on team/*: may pull, not push
QUOTA = 1 << 20  # bytes, on the team namespace
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
async def origin(origin_factory: OriginFactory, tmp_path: Path) -> OriginUnderTest:
    overrides: dict[str, Any] = auth_overrides(tmp_path)
    overrides["quayside.quotas"] = {"namespaces": {"team": "1MiB"}}
    return await origin_factory(overrides=overrides)


def _upload_targets(repo: str, blob: bytes) -> list[tuple[str, str]]:
    """(method, target) of every request that carries a blob or manifest body."""
    session = uuid.uuid4().hex  # refusals before the session is looked at
    return [
        ("POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(blob)}"),
        ("PATCH", f"/v2/{repo}/blobs/uploads/{session}"),
        ("PUT", f"/v2/{repo}/blobs/uploads/{session}?digest={sha256(blob)}"),
        ("PUT", f"/v2/{repo}/manifests/v1"),
    ]


@pytest.mark.parametrize("index", range(4), ids=["post", "patch", "put", "manifest"])
async def test_anonymous_upload_gets_401_with_challenge_and_no_100(
    origin: OriginUnderTest, index: int
) -> None:
    blob = b"b" * 4096
    method, target = _upload_targets("team/app", blob)[index]
    ex = await send_expecting(origin.client.server, method, target, blob)
    assert ex.headers.get("www-authenticate") == 'Basic realm="qs-test"'
    body = await refused(ex, 401, "UNAUTHORIZED")
    assert body["errors"][0]["message"]
    assert origin.upload_dirs() == []


async def test_refused_connection_ends_though_the_client_neither_sends_nor_closes(
    origin: OriginUnderTest,
) -> None:
    """The refused client keeps its connection open and silent: the server does not wait
    for the body longer than its linger time."""
    blob = b"s" * 4096
    method, target = _upload_targets("team/app", blob)[1]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await refused(
        await send_expecting(origin.client.server, method, target, blob),
        401,
        "UNAUTHORIZED",
        silent=True,
    )
    assert loop.time() - started < LINGER + 3.0


async def test_wrong_password_upload_gets_401_and_no_100(origin: OriginUnderTest) -> None:
    blob = b"w" * 4096
    method, target = _upload_targets("team/app", blob)[0]
    ex = await send_expecting(
        origin.client.server, method, target, blob, basic("alice", "not-her-password")
    )
    assert ex.headers.get("www-authenticate", "").startswith("Basic ")
    await refused(ex, 401, "UNAUTHORIZED")


@pytest.mark.parametrize("index", range(4), ids=["post", "patch", "put", "manifest"])
async def test_user_without_push_rights_gets_403_denied_and_no_100(
    origin: OriginUnderTest, index: int
) -> None:
    blob = b"c" * 4096
    method, target = _upload_targets("team/app", blob)[index]
    await refused(
        await send_expecting(origin.client.server, method, target, blob, CAROL), 403, "DENIED"
    )
    assert origin.blob_files() == []


async def test_announced_push_over_quota_gets_403_denied_and_no_100(
    origin: OriginUnderTest,
) -> None:
    """1 GiB announced into a 1 MiB quota, on a session and monolithically: refused before
    the body, which the client never sends."""
    resp = await origin.client.post("/v2/team/app/blobs/uploads/", headers=ALICE)
    assert resp.status == 202, await resp.text()
    session = URL(resp.headers["Location"]).path
    ex = await send_expecting(origin.client.server, "PATCH", session, b"", ALICE, length=1 << 30)
    err = (await refused(ex, 403, "DENIED"))["errors"][0]
    assert "quota exceeded for namespace 'team'" in err["message"]
    assert err["detail"]["requested"] == 1 << 30 and err["detail"]["limit"] == QUOTA

    target = f"/v2/team/app/blobs/uploads/?digest={sha256(b'q')}"
    ex = await send_expecting(origin.client.server, "POST", target, b"", ALICE, length=1 << 30)
    assert "quota exceeded" in (await refused(ex, 403, "DENIED"))["errors"][0]["message"]
    assert origin.blob_files() == [] and origin.upload_dirs() == []


async def test_refusals_of_the_upload_handler_come_before_the_100(
    origin: OriginUnderTest,
) -> None:
    """Checks made by the handler itself, not only by access control: an unknown session
    (404) and a Content-Range that does not continue the upload (416)."""
    unknown = f"/v2/team/app/blobs/uploads/{uuid.uuid4().hex}"
    ex = await send_expecting(origin.client.server, "PATCH", unknown, b"x" * 100, ALICE)
    await refused(ex, 404, "BLOB_UPLOAD_UNKNOWN")

    resp = await origin.client.post("/v2/team/app/blobs/uploads/", headers=ALICE)
    session = URL(resp.headers["Location"]).path
    ex = await send_expecting(
        origin.client.server, "PATCH", session, b"x" * 100, {**ALICE, "Content-Range": "50-149"}
    )
    await refused(ex, 416, "RANGE_INVALID")
    assert ex.headers["range"] == "0-0"


async def test_authorised_chunked_upload_gets_100_and_its_blob_is_stored(
    origin: OriginUnderTest,
) -> None:
    """POST, then PATCH and closing PUT each with ``Expect: 100-continue``: each gets its 100,
    sends its body after it, and the blob reads back with its digest."""
    blob = bytes(range(256)) * 1024  # 256 KiB, under the quota
    first, last = blob[:100_000], blob[100_000:]
    resp = await origin.client.post("/v2/team/app/blobs/uploads/", headers=ALICE)
    assert resp.status == 202, await resp.text()
    session = URL(resp.headers["Location"]).path
    ex = await send_expecting(
        origin.client.server, "PATCH", session, first, {**ALICE, "Content-Range": "0-99999"}
    )
    try:
        assert ex.interim == [100] and ex.body_sent
        assert ex.status == 202, ex.body
        assert ex.headers["range"] == "0-99999"
        assert ex.headers.get("connection", "").lower() != "close"
    finally:
        ex.close()
    target = URL(ex.headers["location"]).update_query(digest=sha256(blob)).raw_path_qs
    ex = await send_expecting(origin.client.server, "PUT", target, last, ALICE)
    try:
        assert ex.interim == [100] and ex.body_sent
        assert ex.status == 201, ex.body
        assert ex.headers["docker-content-digest"] == sha256(blob)
    finally:
        ex.close()
    resp = await origin.client.get(f"/v2/team/app/blobs/{sha256(blob)}", headers=ALICE)
    assert resp.status == 200
    assert sha256(await resp.read()) == sha256(blob)


async def test_authorised_monolithic_push_and_manifest_get_100(
    origin: OriginUnderTest,
) -> None:
    """POST ``?digest=`` with the whole blob (config and layer), then the manifest PUT, all
    with ``Expect: 100-continue``: 100 each time, then 201; the manifest reads back."""
    config, layer, manifest = image("expect")
    for blob in (config, layer):
        target = f"/v2/team/app/blobs/uploads/?digest={sha256(blob)}"
        ex = await send_expecting(origin.client.server, "POST", target, blob, ALICE)
        try:
            assert ex.interim == [100] and ex.status == 201, ex.body
        finally:
            ex.close()
        resp = await origin.client.get(f"/v2/team/app/blobs/{sha256(blob)}", headers=ALICE)
        assert await resp.read() == blob
    ex = await send_expecting(
        origin.client.server, "PUT", "/v2/team/app/manifests/v1", manifest,
        {**ALICE, "Content-Type": MANIFEST_TYPE},
    )  # fmt: skip
    try:
        assert ex.interim == [100] and ex.status == 201, ex.body
        assert ex.headers["docker-content-digest"] == sha256(manifest)
    finally:
        ex.close()
    resp = await origin.client.get(
        "/v2/team/app/manifests/v1", headers={**ALICE, "Accept": MANIFEST_TYPE}
    )
    assert resp.status == 200 and await resp.read() == manifest


async def test_unknown_expectation_is_417(origin: OriginUnderTest) -> None:
    server = origin.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            b"PATCH /v2/team/app/blobs/uploads/x HTTP/1.1\r\nHost: t\r\n"
            b"Expect: something-else\r\nContent-Length: 10\r\n\r\n"
        )
        await writer.drain()
        status, _ = await raw_head(reader)
        assert status == 417
    finally:
        writer.close()


async def _curl_upload(
    origin: OriginUnderTest, method: str, path: str, data: Path, *args: str
) -> tuple[int, int]:
    """curl sends ``data`` with ``Expect: 100-continue`` and waits up to 10 s for the 100;
    returns (final status, body bytes curl sent)."""
    server = origin.client.server
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-o", "/dev/null", "--max-time", "20", "--expect100-timeout", "10",
        "-X", method, "-H", "Expect: 100-continue",
        "-H", "Content-Type: application/octet-stream", "--data-binary", f"@{data}",
        "-w", "%{http_code} %{size_upload}", *args,
        f"http://{server.host}:{server.port}{path}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    status, sent = out.decode().split()
    return int(status), int(sent)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_sends_no_body_when_refused_and_all_of_it_when_accepted(
    origin: OriginUnderTest, tmp_path: Path
) -> None:
    """A real client: curl uploading 2 MiB waits for the 100. Refused (no credentials, a
    viewer's credentials): it sends nothing. Accepted: it sends all, and the blob is stored."""
    blob = bytes(range(256)) * (8 * 1024)  # 2 MiB
    data = tmp_path / "blob"
    data.write_bytes(blob)
    target = f"/v2/public/app/blobs/uploads/?digest={sha256(blob)}"
    assert await _curl_upload(origin, "POST", target, data) == (401, 0)
    carol = ("-u", f"carol:{USERS['carol']}")
    assert await _curl_upload(origin, "POST", target, data, *carol) == (403, 0)
    alice = ("-u", f"alice:{USERS['alice']}")
    assert await _curl_upload(origin, "POST", target, data, *alice) == (201, len(blob))
    resp = await origin.client.get(f"/v2/public/app/blobs/{sha256(blob)}", headers=ALICE)
    assert resp.status == 200 and sha256(await resp.read()) == sha256(blob)
