"""Quotas per namespace: refusal at blob commit with the figures, shared layers counted once
per namespace, other namespaces unaffected, space back after delete + gc."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from harness.images import KiB, make_image, make_layer, sha256_digest

QUOTA = {"quotas": {"namespaces": {"team": "100KiB"}}}


async def test_push_over_the_quota_is_denied_with_the_figure(ops_origin):
    origin = await ops_origin(ops=QUOTA)
    first = make_image(layer_sizes=(60 * KiB,), seed=1)
    await origin.push("team/app", first, "v1")
    used = len(first.manifest) + len(first.config) + first.layers[0].size
    big = make_layer(60 * KiB, seed=2)
    # chunked upload: refused at the commit (PUT), the session stays for a later retry
    resp = await origin.client.post("/v2/team/app/blobs/uploads/")
    loc = resp.headers["Location"]
    resp = await origin.client.patch(loc, data=big.data)
    assert resp.status == 202
    resp = await origin.client.put(resp.headers["Location"], params={"digest": big.digest})
    assert resp.status == 403
    err = (await resp.json())["errors"][0]
    assert err["code"] == "DENIED"
    assert err["detail"] == {
        "namespace": "team",
        "used": used,
        "requested": big.size,
        "limit": 100 * 1024,
    }
    assert f"{used} + {big.size} > {100 * 1024} bytes" in err["message"]
    assert not origin.has_blob(big.digest)
    assert len(list((origin.repo_dir("team/app") / "_uploads").iterdir())) == 1
    # monolithic upload and a mount into the namespace are refused the same way
    resp = await origin.client.post(
        "/v2/team/other/blobs/uploads/", params={"digest": big.digest}, data=big.data
    )
    assert resp.status == 403
    assert any(e["action"] == "quota.denied" for e in origin.audit)
    assert origin.ops.metrics.value("quota_denials") == 2


async def test_shared_layers_count_once_and_other_namespaces_are_free(ops_origin):
    origin = await ops_origin(ops=QUOTA)
    base = make_image(layer_sizes=(70 * KiB,), seed=3)
    await origin.push("team/a", base, "v1")
    # the same layer in another repository of the namespace costs nothing new
    again = make_image(base.layers, seed=4)
    await origin.push("team/b", again, "v1")
    resp = await origin.client.post(
        "/v2/team/c/blobs/uploads/", params={"mount": base.layers[0].digest, "from": "team/a"}
    )
    assert resp.status == 201
    # a different namespace has no quota
    await origin.push("free/x", make_image(layer_sizes=(200 * KiB,), seed=5), "v1")
    assert await origin.ops.quotas.usage("team") < 100 * 1024


async def test_concurrent_commits_cannot_squeeze_past_the_quota_together(ops_origin):
    origin = await ops_origin(ops=QUOTA)
    blobs = [make_layer(30 * KiB, seed=10 + i).data for i in range(6)]
    resps = await asyncio.gather(
        *(
            origin.client.post(
                f"/v2/team/r{i}/blobs/uploads/", params={"digest": sha256_digest(b)}, data=b
            )
            for i, b in enumerate(blobs)
        )
    )
    assert sorted(r.status for r in resps) == [201] * 3 + [403] * 3
    assert await origin.ops.quotas.usage("team") <= 100 * 1024


async def test_space_comes_back_after_delete_and_gc(ops_origin):
    origin = await ops_origin(ops=QUOTA)
    first = make_image(layer_sizes=(80 * KiB,), seed=20)
    await origin.push("team/app", first, "v1")
    second = make_image(layer_sizes=(80 * KiB,), seed=21)
    resp = await origin.client.post(
        "/v2/team/app/blobs/uploads/",
        params={"digest": second.layers[0].digest},
        data=second.layers[0].data,
    )
    assert resp.status == 403
    assert await origin.delete("team/app", first.digest) == 202
    await origin.gc()
    await origin.push("team/app", second, "v2")
    assert await origin.pull_ok("team/app", second, "v2")


async def test_closing_put_over_the_quota_is_refused_as_its_body_arrives(ops_origin):
    """The digest of a closing PUT is known, and not held: its body is metered, refused past
    the limit, audited and counted like a commit refusal, and the session is dropped."""
    origin = await ops_origin(ops=QUOTA)
    big = make_layer(150 * KiB, seed=30)
    resp = await origin.client.post("/v2/team/app/blobs/uploads/")
    loc = resp.headers["Location"]

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, big.size, 16 * KiB):
            yield big.data[i : i + 16 * KiB]

    resp = await origin.client.put(loc, params={"digest": big.digest}, data=body())
    assert resp.status == 403
    err = (await resp.json())["errors"][0]
    assert err["code"] == "DENIED"
    assert err["detail"]["namespace"] == "team" and err["detail"]["uploading"] == 0
    assert 100 * KiB < err["detail"]["requested"] <= big.size
    assert "its bytes dropped" in err["message"]
    assert not (origin.repo_dir("team/app") / "_uploads").exists() or not any(
        (origin.repo_dir("team/app") / "_uploads").iterdir()
    )
    (event,) = [e for e in origin.audit if e["action"] == "quota.denied"]
    assert event["stage"] == "upload" and event["namespace"] == "team"
    assert origin.ops.metrics.value("quota_denials") == 1
    assert origin.ops.quotas.in_flight.total("team") == 0


async def test_monolithic_post_announcing_too_much_is_refused_and_a_held_blob_is_free(ops_origin):
    origin = await ops_origin(ops=QUOTA)
    held = make_layer(80 * KiB, seed=31)
    await origin.blob("team/app", held.data)
    new = make_layer(40 * KiB, seed=32)
    resp = await origin.client.post(
        "/v2/team/b/blobs/uploads/", params={"digest": new.digest}, data=new.data
    )
    assert resp.status == 403
    assert (await resp.json())["errors"][0]["detail"]["requested"] == new.size
    # the same bytes as a held blob cost nothing: neither metered nor refused at commit
    resp = await origin.client.post(
        "/v2/team/b/blobs/uploads/", params={"digest": held.digest}, data=held.data
    )
    assert resp.status == 201
    assert origin.ops.quotas.in_flight.total("team") == 0


async def test_upload_charges_end_with_their_sessions(ops_origin):
    """A session streamed past the largest held blob is charged while it waits; another
    session then has only what is left; cancelling the first frees its share."""
    origin = await ops_origin(ops=QUOTA)
    first, second = make_layer(60 * KiB, seed=33), make_layer(60 * KiB, seed=34)
    locs = []
    for layer in (first, second):
        resp = await origin.client.post("/v2/team/app/blobs/uploads/")
        resp = await origin.client.patch(resp.headers["Location"], data=layer.data)
        locs.append((resp.status, resp.headers.get("Location")))
    assert [s for s, _ in locs] == [202, 403]
    assert origin.ops.quotas.in_flight.total("team") == first.size
    assert (await origin.client.delete(locs[0][1])).status == 204
    assert origin.ops.quotas.in_flight.total("team") == 0
    resp = await origin.client.post("/v2/team/app/blobs/uploads/")
    resp = await origin.client.patch(resp.headers["Location"], data=second.data)
    assert resp.status == 202
