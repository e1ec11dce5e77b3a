"""The origin application's own behaviour: /v2/, health, metrics, read-only, start-up work."""

from __future__ import annotations

import asyncio
import os
import time

from origin import state
from regcore.digest import Digest
from regcore.health import RESULT_TTL

NAME = "team/app"


async def test_v2_base_answers_empty_json_with_api_version(origin):
    resp = await origin.client.get("/v2/")
    assert resp.status == 200
    assert await resp.json() == {}
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    head = await origin.client.head("/v2/")
    assert head.status == 200
    assert head.headers["Docker-Distribution-API-Version"] == "registry/2.0"


async def test_unknown_v2_path_is_json_404_with_api_version(origin):
    resp = await origin.client.get("/v2/team/app/nothing/here")
    assert resp.status == 404
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert (await resp.json())["errors"][0]["code"]


async def test_every_answer_says_server_quayside_without_versions(origin):
    """Plain, file (zero-copy blob), HEAD, upload, range-error and 404 answers, metrics and
    health: ``Server: quayside``, never the Python and aiohttp versions."""
    data = os.urandom(4096)
    dg = await origin.push(NAME, data)
    loc = await origin.start(NAME)
    answers = [
        await origin.client.get("/v2/"),
        await origin.client.get(f"/v2/{NAME}/blobs/{dg}"),
        await origin.client.head(f"/v2/{NAME}/blobs/{dg}"),
        await origin.client.get(f"/v2/{NAME}/blobs/{dg}", headers={"Range": "bytes=9999-"}),
        await origin.client.post(f"/v2/{NAME}/blobs/uploads/"),
        await origin.patch(loc, b"x", start=5),
        await origin.client.get(f"/v2/{NAME}/nothing/here"),
        await origin.client.get("/metrics"),
        await origin.client.get("/healthz"),
    ]
    assert [r.status for r in answers] == [200, 200, 200, 416, 202, 416, 404, 200, 200]
    for resp in answers:
        assert resp.headers.getall("Server") == ["quayside"], resp


async def test_healthz_ok_and_unhealthy_when_root_unwritable(origin):
    resp = await origin.client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"
    if os.geteuid() == 0:
        return  # root ignores permissions; the write probe cannot fail here
    incomplete = origin.v2 / "_incomplete"
    incomplete.chmod(0o500)
    try:
        await asyncio.sleep(RESULT_TTL)  # the last result is reused for RESULT_TTL seconds
        bad = await origin.client.get("/healthz")
        assert bad.status == 503
    finally:
        incomplete.chmod(0o755)


async def test_metrics_count_requests_and_upload_sessions(origin):
    await origin.push(NAME, b"counted", chunk=3)
    loc = await origin.start(NAME)
    await origin.client.delete(loc)
    text = await (await origin.client.get("/metrics")).text()
    assert "quayside_origin_upload_sessions_started_total 2.0" in text
    assert "quayside_origin_upload_sessions_completed_total 1.0" in text
    assert 'quayside_origin_upload_sessions_cancelled_total{reason="client"} 1.0' in text
    assert (
        'quayside_origin_http_requests_total{method="PATCH",route="upload",status="202"} 3.0'
        in text
    )
    assert 'quayside_origin_blobs_committed_total{source="upload"} 1.0' in text
    assert "quayside_origin_upload_bytes_total 7.0" in text


async def test_each_app_has_its_own_metrics_registry(origin_factory, tmp_path):
    a = await origin_factory(root=tmp_path / "a")
    b = await origin_factory(root=tmp_path / "b")
    await a.push(NAME, b"only in a")
    assert a.app[state.METRICS].value("upload_sessions_started") == 1
    assert b.app[state.METRICS].value("upload_sessions_started") == 0


async def test_read_only_refuses_writes_and_serves_reads(origin_factory, tmp_path):
    root = tmp_path / "ro"
    writable = await origin_factory(root=root)
    dg = await writable.push(NAME, b"served while read-only")
    loc = await writable.start(NAME)
    await writable.client.close()

    ro = await origin_factory(root=root, overrides={"storage.maintenance.readonly.enabled": True})
    blob = f"/v2/{NAME}/blobs/{dg}"
    writes = [
        ("POST", f"/v2/{NAME}/blobs/uploads/"),
        ("PATCH", loc),
        ("PUT", loc + f"?digest={dg}"),
        ("DELETE", loc),
        ("DELETE", blob),
        ("PUT", f"/v2/{NAME}/manifests/latest"),
    ]
    before = sorted(p for p in root.rglob("*"))
    for method, path in writes:
        resp = await ro.client.request(method, path, data=b"x")
        assert resp.status == 405, (method, path)
        assert await ro.error_code(resp) == "UNSUPPORTED"
    assert sorted(p for p in root.rglob("*")) == before
    got = await ro.client.get(blob)
    assert got.status == 200 and await got.read() == b"served while read-only"
    assert (await ro.client.get(loc)).status == 204
    assert (await ro.client.get("/healthz")).status == 200


async def test_startup_removes_temp_files_left_by_a_crash(origin_factory, tmp_path):
    root = tmp_path / "crashed"
    incomplete = root / "docker" / "registry" / "v2" / "_incomplete"
    incomplete.mkdir(parents=True)
    (incomplete / "leftover").write_bytes(b"half a blob")
    origin = await origin_factory(root=root)
    assert origin.incomplete_files() == []
    assert (await origin.client.get("/v2/")).status == 200


async def test_background_purge_removes_stale_uploads_at_startup(origin_factory, tmp_path):
    root = tmp_path / "stale"
    uploads = root / "docker" / "registry" / "v2" / "repositories" / "team" / "app" / "_uploads"
    stale = uploads / ("a" * 32)
    stale.mkdir(parents=True)
    (stale / "data").write_bytes(b"old")
    (stale / "startedat").write_text("2020-01-02T03:04:05.123456789Z")  # registry:2's format
    fresh = uploads / ("b" * 32)
    fresh.mkdir()
    (fresh / "startedat").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    await origin_factory(
        root=root,
        overrides={
            "storage.maintenance.uploadpurging": {"enabled": True, "age": "1h", "interval": "1h"}
        },
    )
    for _ in range(100):
        if not stale.exists():
            break
        await asyncio.sleep(0.02)
    assert not stale.exists()
    assert fresh.exists()


async def test_purge_disabled_keeps_stale_uploads(origin_factory, tmp_path):
    root = tmp_path / "keep"
    stale = root / "docker" / "registry" / "v2" / "repositories" / "r" / "_uploads" / ("c" * 32)
    stale.mkdir(parents=True)
    (stale / "startedat").write_text("2020-01-02T03:04:05Z")
    origin = await origin_factory(
        root=root, overrides={"storage.maintenance.uploadpurging.enabled": False}
    )
    await asyncio.sleep(0.1)
    assert stale.exists()
    status = await origin.client.get(f"/v2/r/blobs/uploads/{'c' * 32}")
    assert status.status == 204 and status.headers["Range"] == "0-0"


async def test_shared_store_can_be_injected(origin_factory, tmp_path):
    from regcore.storage.blobstore import FilesystemBlobStore
    from regcore.storage.layout import Layout

    store = FilesystemBlobStore(Layout(tmp_path / "injected"))
    dg = await store.put_bytes(b"preloaded")
    origin = await origin_factory(store=store)
    await origin.app[state.REPOS].link_blob(NAME, dg)
    resp = await origin.client.get(f"/v2/{NAME}/blobs/{dg}")
    assert await resp.read() == b"preloaded"
    assert dg == Digest.of(b"preloaded")


async def test_metrics_count_registry_errors_with_their_own_status(origin):
    missing = "sha256:" + "0" * 64
    assert (await origin.client.get(f"/v2/{NAME}/blobs/{missing}")).status == 404
    assert (await origin.client.get(f"/v2/{NAME}/blobs/sha256:nothex")).status == 400
    text = await (await origin.client.get("/metrics")).text()
    assert 'quayside_origin_http_requests_total{method="GET",route="blob",status="404"} 1.0' in text
    assert 'quayside_origin_http_requests_total{method="GET",route="blob",status="400"} 1.0' in text
    assert 'status="500"' not in text
