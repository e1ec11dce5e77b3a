"""Tag immutability: protected tags cannot move or be deleted (409 DENIED naming the rule);
other tags keep working; ``latest`` can be refused in protected repositories."""

from __future__ import annotations

import asyncio

from harness.images import KiB, make_image

RULES = {
    "immutability": {
        "rules": [
            {"repositories": "release/**"},
            {"repositories": "team/**", "tags": "^v[0-9]"},
        ],
        "refuse_latest": ["release/**"],
    }
}


async def error(resp) -> dict:
    body = await resp.json()
    return body["errors"][0]


async def test_overwriting_an_immutable_tag_is_denied_naming_the_rule(ops_origin):
    origin = await ops_origin(ops=RULES)
    one, two = make_image(layer_sizes=(KiB,), seed=1), make_image(layer_sizes=(KiB,), seed=2)
    await origin.push("team/app", one, "v1.0")
    await origin.push("team/app", two)  # by digest: allowed
    before = origin.tag_link("team/app", "v1.0").read_bytes()
    resp = await origin.put_manifest("team/app", "v1.0", two.manifest, two.media_type)
    assert resp.status == 409
    err = await error(resp)
    assert err["code"] == "DENIED"
    assert "'^v[0-9]'" in err["message"] and "team/**" in err["message"]
    assert origin.tag_link("team/app", "v1.0").read_bytes() == before  # nothing moved
    # the same digest again is an idempotent re-push, not an overwrite
    resp = await origin.put_manifest("team/app", "v1.0", one.manifest, one.media_type)
    assert resp.status == 201
    # tags the rule does not match move freely
    await origin.push("team/app", one, "latest")
    await origin.push("team/app", two, "latest")
    assert origin.tag_link("team/app", "latest").read_text() == two.digest
    assert any(e["action"] == "immutability.denied" for e in origin.audit)


async def test_deleting_an_immutable_tag_or_its_manifest_is_denied(ops_origin):
    origin = await ops_origin(ops=RULES)
    image = make_image(layer_sizes=(KiB,), seed=3)
    await origin.push("release/app", image, "stable")
    for ref in ("stable", image.digest):
        resp = await origin.client.delete(f"/v2/release/app/manifests/{ref}")
        assert resp.status == 409, ref
        err = await error(resp)
        assert err["code"] == "DENIED" and "release/**" in err["message"]
    assert await origin.pull_ok("release/app", image, "stable")
    other = make_image(layer_sizes=(KiB,), seed=4)
    await origin.push("team/app", other, "dev")
    assert await origin.delete("team/app", "dev") == 202


async def test_latest_is_refused_in_protected_repositories_only(ops_origin):
    origin = await ops_origin(ops=RULES)
    image = make_image(layer_sizes=(KiB,), seed=5)
    await origin.push("release/app", image)
    resp = await origin.put_manifest("release/app", "latest", image.manifest, image.media_type)
    assert resp.status == 409
    err = await error(resp)
    assert "latest" in err["message"] and "refuse_latest 'release/**'" in err["message"]
    assert not origin.tag_link("release/app", "latest").exists()
    await origin.push("team/app", image, "latest")


async def test_concurrent_first_pushes_of_one_immutable_tag_one_wins(ops_origin):
    origin = await ops_origin(ops=RULES)
    images = [make_image(layer_sizes=(KiB,), seed=10 + i) for i in range(6)]
    for image in images:
        await origin.push("release/app", image)
    resps = await asyncio.gather(
        *(origin.put_manifest("release/app", "1.0", i.manifest, i.media_type) for i in images)
    )
    statuses = sorted(r.status for r in resps)
    assert statuses == [201] + [409] * 5
    winner = next(i for i, r in zip(images, resps, strict=True) if r.status == 201)
    assert origin.tag_link("release/app", "1.0").read_text() == winner.digest


async def test_tag_parameters_of_a_put_by_digest_obey_the_rules(ops_origin):
    origin = await ops_origin(ops=RULES)
    one, two = make_image(layer_sizes=(KiB,), seed=20), make_image(layer_sizes=(KiB,), seed=21)
    await origin.push("team/app", one, "v2.0")
    await origin.push("team/app", two)
    resp = await origin.client.put(
        f"/v2/team/app/manifests/{two.digest}",
        params=[("tag", "dev"), ("tag", "v2.0")],
        data=two.manifest,
        headers={"Content-Type": two.media_type},
    )
    assert resp.status == 409
    assert (await error(resp))["code"] == "DENIED"
    assert origin.tag_link("team/app", "v2.0").read_text() == one.digest
    assert not origin.tag_link("team/app", "dev").exists()  # refused before any tag moved
