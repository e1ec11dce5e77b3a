"""Admin endpoints (what ``quayside gc``/``retention``/``ls`` call on a serving origin) and
the namespace usage metrics."""

from __future__ import annotations

import json

from harness.images import KiB, make_image
from origin.rootlock import TOKEN_HEADER, read_token


async def test_admin_endpoints_need_the_roots_token(ops_origin):
    origin = await ops_origin()
    resp = await origin.client.post("/_quayside/admin/gc")
    assert resp.status == 401
    assert (await resp.json())["errors"][0]["code"] == "UNAUTHORIZED"
    resp = await origin.client.post("/_quayside/admin/gc", headers={TOKEN_HEADER: "nope"})
    assert resp.status == 403
    assert (await resp.json())["errors"][0]["code"] == "DENIED"
    token = read_token(origin.ops.layout)
    assert token and (origin.root / "quayside" / "admin.token").stat().st_mode & 0o077 == 0
    resp = await origin.client.post("/_quayside/admin/pulls/flush", headers={TOKEN_HEADER: token})
    assert resp.status == 200


async def test_gc_through_the_admin_endpoint_streams_progress_then_the_report(ops_origin):
    origin = await ops_origin()
    image = make_image(layer_sizes=(4 * KiB,), seed=1)
    await origin.push("team/app", image, "v1")
    assert await origin.delete("team/app", image.digest) == 202
    token = read_token(origin.ops.layout)
    resp = await origin.client.post(
        "/_quayside/admin/gc",
        params={"grace": "0s", "dry_run": "0"},
        headers={TOKEN_HEADER: token},
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    report = lines[-1]["report"]
    assert {d for d, _ in report["blobs_deleted"]} == {image.digest, *image.blobs()}
    assert all("phase" in line for line in lines[:-1])
    assert not any(origin.has_blob(d) for d in image.blobs())
    bad = await origin.client.post(
        "/_quayside/admin/gc", params={"grace": "soon"}, headers={TOKEN_HEADER: token}
    )
    assert bad.status == 400


async def test_namespace_bytes_metric_counts_shared_layers_once(ops_origin):
    origin = await ops_origin(ops={"quotas": {"namespaces": {"team": "1MiB"}}})
    a = make_image(layer_sizes=(16 * KiB,), seed=10)
    b = make_image(a.layers, seed=11)  # same layer, other config
    await origin.push("team/a", a, "v1")
    await origin.push("team/b", b, "v1")
    await origin.push("other/c", make_image(layer_sizes=(8 * KiB,), seed=12), "v1")
    token = read_token(origin.ops.layout)
    resp = await origin.client.get("/_quayside/admin/usage", headers={TOKEN_HEADER: token})
    usage = (await resp.json())["namespaces"]
    expected = len(a.manifest) + len(b.manifest) + len(a.config) + len(b.config) + a.layers[0].size
    assert usage["team"] == {"bytes": expected, "limit": 1024 * 1024}
    assert usage["other"]["limit"] is None
    text = await (await origin.client.get("/metrics")).text()
    assert f'quayside_origin_namespace_bytes{{namespace="team"}} {float(expected)}' in text
    assert 'quayside_origin_namespace_quota_bytes{namespace="team"} 1.048576e+06' in text
