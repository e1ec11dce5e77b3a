"""Manifest PUT/GET/HEAD/DELETE against a real origin app on a loopback port.

Every refused request is checked twice: the spec's status and error code, and a snapshot of
the storage root taken before and after (a refused PUT must not leave a single new file).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from harness.images import Image, make_image, make_index
from origin import state
from origin.app import create_app
from regcore import mediatypes as mt
from regcore.config import LimitsConfig, MaintenanceConfig, OriginConfig, StorageConfig
from regcore.digest import Digest

REPO = "team/app"


# -- fixtures -----------------------------------------------------------------------------
def build_app(
    root: Path,
    *,
    delete_enabled: bool = True,
    max_manifest: int | None = None,
    readonly: bool = False,
) -> web.Application:
    """The real origin application (``origin.app.create_app``) on ``root``."""
    config = OriginConfig(
        storage=StorageConfig(
            rootdirectory=str(root),
            delete_enabled=delete_enabled,
            maintenance=MaintenanceConfig(readonly=readonly),
        ),
        limits=LimitsConfig(max_manifest_bytes=max_manifest or LimitsConfig.max_manifest_bytes),
    )
    return create_app(config)


@pytest.fixture
async def origin(aiohttp_client, tmp_path):
    app = build_app(tmp_path)
    client = await aiohttp_client(app)
    client.root = tmp_path
    return client


async def seed_blobs(client: Any, name: str, blobs: dict[str, bytes]) -> None:
    """Put blobs in the store and link them into ``name`` (what a finished upload does)."""
    store = client.app[state.STORE]
    repos = client.app[state.REPOS]
    for digest, data in blobs.items():
        dg = await store.put_bytes(data, Digest.parse(digest))
        await repos.link_blob(name, dg)


async def put_manifest(client: Any, name: str, ref: str, body: bytes, media_type: str | None):
    headers = {"Content-Type": media_type} if media_type else {}
    data: Any = io.BytesIO(body) if len(body) > 1024 * 1024 else body
    return await client.put(f"/v2/{name}/manifests/{ref}", data=data, headers=headers)


async def push_image(client: Any, name: str, image: Image, ref: str | None = None):
    await seed_blobs(client, name, image.blobs())
    resp = await put_manifest(client, name, ref or image.digest, image.manifest, image.media_type)
    assert resp.status == 201, await resp.text()
    return resp


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its content."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


async def error_code(resp: Any) -> str:
    body = await resp.json()
    return body["errors"][0]["code"]


# -- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", ["oci", "docker"])
async def test_put_by_tag_then_get_and_head_return_exact_bytes(origin, flavour):
    image = make_image(flavour=flavour, seed=11)
    resp = await push_image(origin, REPO, image, "v1")
    assert resp.headers["Location"] == f"/v2/{REPO}/manifests/{image.digest}"
    assert resp.headers["Docker-Content-Digest"] == image.digest
    assert "OCI-Subject" not in resp.headers

    for ref in ("v1", image.digest):
        got = await origin.get(f"/v2/{REPO}/manifests/{ref}", headers={"Accept": image.media_type})
        assert got.status == 200
        assert await got.read() == image.manifest
        assert got.headers["Content-Type"] == image.media_type
        assert got.headers["Docker-Content-Digest"] == image.digest
        assert got.headers["ETag"] == f'"{image.digest}"'
        assert int(got.headers["Content-Length"]) == len(image.manifest)

        head = await origin.head(
            f"/v2/{REPO}/manifests/{ref}", headers={"Accept": image.media_type}
        )
        assert head.status == 200
        assert await head.read() == b""
        assert head.headers["Content-Length"] == str(len(image.manifest))
        assert head.headers["Docker-Content-Digest"] == image.digest
        assert head.headers["Content-Type"] == image.media_type


@pytest.mark.parametrize("flavour", ["oci", "docker"])
async def test_index_and_manifest_list_round_trip(origin, flavour):
    index = make_index(flavour=flavour, seed=21)
    for image in index.images:
        await push_image(origin, REPO, image)
    resp = await put_manifest(origin, REPO, "multi", index.manifest, index.media_type)
    assert resp.status == 201, await resp.text()
    got = await origin.get(f"/v2/{REPO}/manifests/multi", headers={"Accept": index.media_type})
    assert got.status == 200
    assert await got.read() == index.manifest
    assert got.headers["Content-Type"] == index.media_type
    assert got.headers["Docker-Content-Digest"] == index.digest


async def test_body_is_stored_verbatim_even_with_odd_formatting(origin):
    image = make_image(seed=31)
    await seed_blobs(origin, REPO, image.blobs())
    doc = json.loads(image.manifest)
    body = ("\n\n" + json.dumps(doc, indent=7) + "  \n").encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    resp = await put_manifest(origin, REPO, digest, body, mt.OCI_MANIFEST)
    assert resp.status == 201
    got = await origin.get(f"/v2/{REPO}/manifests/{digest}")
    assert await got.read() == body


async def test_media_type_detected_when_content_type_is_generic_and_body_has_none(origin):
    image = make_image(seed=41)
    await seed_blobs(origin, REPO, image.blobs())
    doc = json.loads(image.manifest)
    del doc["mediaType"]
    body = json.dumps(doc).encode()
    resp = await put_manifest(origin, REPO, "nomt", body, "application/json")
    assert resp.status == 201
    got = await origin.get(f"/v2/{REPO}/manifests/nomt")
    assert got.headers["Content-Type"] == mt.OCI_MANIFEST
    assert await got.read() == body


async def test_retagging_moves_the_tag_and_keeps_the_old_revision(origin):
    a, b = make_image(seed=51), make_image(seed=52)
    await push_image(origin, REPO, a, "latest")
    await push_image(origin, REPO, b, "latest")
    got = await origin.get(f"/v2/{REPO}/manifests/latest")
    assert got.headers["Docker-Content-Digest"] == b.digest
    old = await origin.get(f"/v2/{REPO}/manifests/{a.digest}")
    assert old.status == 200


async def test_sha512_reference_is_honoured(origin):
    image = make_image(seed=61)
    await seed_blobs(origin, REPO, image.blobs())
    digest = "sha512:" + hashlib.sha512(image.manifest).hexdigest()
    resp = await put_manifest(origin, REPO, digest, image.manifest, image.media_type)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Docker-Content-Digest"] == digest
    got = await origin.get(f"/v2/{REPO}/manifests/{digest}")
    assert await got.read() == image.manifest


# -- tags set in the same request (?tag=, the spec's draft) ----------------------------------
def oci_tags(resp: Any) -> list[str]:
    """Every tag named by the ``OCI-Tag`` header(s), in order (RFC 9110 list semantics)."""
    return [t.strip() for value in resp.headers.getall("OCI-Tag", []) for t in value.split(",")]


async def test_put_by_digest_with_tag_params_sets_each_tag_and_echoes_oci_tag(origin):
    image = make_image(seed=65)
    await seed_blobs(origin, REPO, image.blobs())
    tags = ["1.2.3", "1.2", "1", "latest"]
    resp = await origin.put(
        f"/v2/{REPO}/manifests/{image.digest}",
        params=[("tag", t) for t in tags],
        data=image.manifest,
        headers={"Content-Type": image.media_type},
    )
    assert resp.status == 201, await resp.text()
    assert oci_tags(resp) == tags
    assert resp.headers["Docker-Content-Digest"] == image.digest
    for tag in tags:
        got = await origin.get(f"/v2/{REPO}/manifests/{tag}")
        assert got.status == 200 and await got.read() == image.manifest
        assert got.headers["Docker-Content-Digest"] == image.digest
    listed = await (await origin.get(f"/v2/{REPO}/tags/list")).json()
    assert sorted(listed["tags"]) == sorted(tags)


async def test_tag_params_are_checked_before_anything_is_stored(origin):
    image = make_image(seed=66)
    await seed_blobs(origin, REPO, image.blobs())
    before = snapshot(origin.root)
    url = f"/v2/{REPO}/manifests/{image.digest}"
    headers = {"Content-Type": image.media_type}
    for bad in (["ok", "-bad"], ["ok", ""], ["x" * 129]):
        resp = await origin.put(
            url, params=[("tag", t) for t in bad], data=image.manifest, headers=headers
        )
        assert resp.status == 400, bad
        assert await error_code(resp) == "TAG_INVALID"
        assert "OCI-Tag" not in resp.headers
    too_many = [("tag", f"t{i}") for i in range(101)]
    resp = await origin.put(url, params=too_many, data=image.manifest, headers=headers)
    assert resp.status == 414 and await error_code(resp) == "TAG_INVALID"
    assert snapshot(origin.root) == before
    # a hundred is fine, and a repeated tag is set (and echoed) once
    params = [("tag", f"t{i}") for i in range(100)] + [("tag", "t0")]
    resp = await origin.put(url, params=params, data=image.manifest, headers=headers)
    assert resp.status == 201 and oci_tags(resp) == [f"t{i}" for i in range(100)]


async def test_sha512_manifest_with_tag_params_keeps_its_sha512_digest(origin):
    """A manifest PUT by a sha512 reference is stored and answered under that digest: by
    digest, and through the tags set with ``?tag=`` (GET and HEAD), never as sha256."""
    image = make_image(seed=67)
    await seed_blobs(origin, REPO, image.blobs())
    digest = "sha512:" + hashlib.sha512(image.manifest).hexdigest()
    resp = await origin.put(
        f"/v2/{REPO}/manifests/{digest}",
        params=[("tag", "v1"), ("tag", "stable")],
        data=image.manifest,
        headers={"Content-Type": image.media_type},
    )
    assert resp.status == 201, await resp.text()
    assert resp.headers["Docker-Content-Digest"] == digest
    assert resp.headers["Location"] == f"/v2/{REPO}/manifests/{digest}"
    assert oci_tags(resp) == ["v1", "stable"]
    for ref in ("v1", "stable", digest):
        for method in ("GET", "HEAD"):
            got = await origin.request(method, f"/v2/{REPO}/manifests/{ref}")
            assert got.status == 200, (method, ref)
            assert got.headers["Docker-Content-Digest"] == digest, (method, ref)
            assert got.headers["ETag"] == f'"{digest}"'
        assert await (await origin.get(f"/v2/{REPO}/manifests/{ref}")).read() == image.manifest
    # the same bytes were never stored under their sha256 digest
    assert (await origin.get(f"/v2/{REPO}/manifests/{image.digest}")).status == 404


# -- Accept negotiation ---------------------------------------------------------------------
async def test_oci_manifest_not_served_to_client_that_only_accepts_docker(origin):
    image = make_image(seed=71)
    await push_image(origin, REPO, image, "v1")
    got = await origin.get(f"/v2/{REPO}/manifests/v1", headers={"Accept": mt.DOCKER_MANIFEST})
    assert got.status == 404
    assert await error_code(got) == "MANIFEST_UNKNOWN"
    head = await origin.head(f"/v2/{REPO}/manifests/v1", headers={"Accept": mt.DOCKER_MANIFEST})
    assert head.status == 404


@pytest.mark.parametrize(
    "accept",
    [None, "*/*", "application/json", f"{mt.DOCKER_MANIFEST}, {mt.OCI_MANIFEST};q=0.5"],
)
async def test_accept_variants_that_allow_the_stored_type(origin, accept):
    image = make_image(seed=81)
    await push_image(origin, REPO, image, "v1")
    headers = {"Accept": accept} if accept else {}
    got = await origin.get(f"/v2/{REPO}/manifests/v1", headers=headers)
    assert got.status == 200
    assert await got.read() == image.manifest


async def test_if_none_match_answers_304(origin):
    image = make_image(seed=91)
    await push_image(origin, REPO, image, "v1")
    got = await origin.get(
        f"/v2/{REPO}/manifests/v1", headers={"If-None-Match": f'"{image.digest}"'}
    )
    assert got.status == 304
    assert got.headers["Docker-Content-Digest"] == image.digest


# -- refused pushes leave the store untouched ----------------------------------------------------
async def test_missing_layer_is_manifest_blob_unknown(origin):
    image = make_image(seed=101, layer_sizes=(1000, 2000))
    missing = image.layers[1].digest
    blobs = {d: b for d, b in image.blobs().items() if d != missing}
    await seed_blobs(origin, REPO, blobs)
    before = snapshot(origin.root)
    resp = await put_manifest(origin, REPO, "v1", image.manifest, image.media_type)
    assert resp.status == 400
    body = await resp.json()
    assert body["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert body["errors"][0]["detail"]["digest"] == missing
    assert snapshot(origin.root) == before


async def test_every_missing_blob_is_reported_in_one_answer(origin):
    image = make_image(seed=102, layer_sizes=(1000, 2000, 3000))
    missing = {image.layers[0].digest, image.layers[2].digest}
    await seed_blobs(origin, REPO, {d: b for d, b in image.blobs().items() if d not in missing})
    resp = await put_manifest(origin, REPO, "v1", image.manifest, image.media_type)
    assert resp.status == 400
    body = await resp.json()
    assert [e["code"] for e in body["errors"]] == ["MANIFEST_BLOB_UNKNOWN"] * 2
    assert {e["detail"]["digest"] for e in body["errors"]} == missing


async def test_blob_in_store_but_not_linked_into_this_repo_is_refused(origin):
    image = make_image(seed=111)
    await seed_blobs(origin, "other/repo", image.blobs())
    before = snapshot(origin.root)
    resp = await put_manifest(origin, REPO, "v1", image.manifest, image.media_type)
    assert resp.status == 400
    assert await error_code(resp) == "MANIFEST_BLOB_UNKNOWN"
    assert snapshot(origin.root) == before


async def test_index_with_unknown_child_is_refused(origin):
    index = make_index(seed=121)
    await push_image(origin, REPO, index.images[0])
    for image in index.images[1:]:
        await seed_blobs(origin, REPO, image.blobs())  # blobs but no manifest
    before = snapshot(origin.root)
    resp = await put_manifest(origin, REPO, "multi", index.manifest, index.media_type)
    assert resp.status == 400
    body = await resp.json()
    assert body["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert body["errors"][0]["detail"]["digest"] == index.images[1].digest
    assert snapshot(origin.root) == before


async def test_digest_reference_must_match_body(origin):
    image, other = make_image(seed=131), make_image(seed=132)
    await seed_blobs(origin, REPO, image.blobs())
    before = snapshot(origin.root)
    resp = await put_manifest(origin, REPO, other.digest, image.manifest, image.media_type)
    assert resp.status == 400
    assert await error_code(resp) == "DIGEST_INVALID"
    assert snapshot(origin.root) == before


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"blablabla", mt.OCI_MANIFEST),
        (b'{"schemaVersion": 2, "config": ', mt.OCI_MANIFEST),
        (b"[]", mt.OCI_MANIFEST),
        (b"", mt.OCI_MANIFEST),
        (
            json.dumps({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}).encode(),
            mt.DOCKER_SCHEMA1_SIGNED,
        ),
        (
            json.dumps({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}).encode(),
            "application/json",
        ),
        (
            json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}).encode(),
            mt.OCI_MANIFEST,
        ),
        (
            json.dumps(
                {"schemaVersion": 2, "mediaType": "text/html", "config": {}, "layers": []}
            ).encode(),
            None,
        ),
    ],
    ids=[
        "not-json",
        "truncated",
        "array",
        "empty",
        "schema1-signed",
        "schema1-json",
        "type-mismatch",
        "bad-type",
    ],
)
async def test_malformed_manifests_are_manifest_invalid(origin, body, content_type):
    before = snapshot(origin.root)
    resp = await put_manifest(origin, REPO, "v1", body, content_type)
    assert resp.status == 400
    assert await error_code(resp) == "MANIFEST_INVALID"
    assert snapshot(origin.root) == before


async def test_oversized_manifest_is_413(aiohttp_client, tmp_path):
    client = await aiohttp_client(build_app(tmp_path, max_manifest=1024))
    image = make_image(seed=141)
    await seed_blobs(client, REPO, image.blobs())
    doc = json.loads(image.manifest)
    doc["annotations"] = {"pad": "x" * 2000}
    before = snapshot(tmp_path)
    resp = await put_manifest(client, REPO, "big", json.dumps(doc).encode(), mt.OCI_MANIFEST)
    assert resp.status == 413
    assert await error_code(resp) == "MANIFEST_INVALID"

    async def chunked():  # no Content-Length: the limit still holds while streaming
        yield json.dumps(doc).encode()

    resp = await client.put(
        f"/v2/{REPO}/manifests/big", data=chunked(), headers={"Content-Type": mt.OCI_MANIFEST}
    )
    assert resp.status == 413
    assert snapshot(tmp_path) == before


async def test_default_limit_accepts_a_manifest_over_one_mebibyte(origin):
    image = make_image(seed=151)
    await seed_blobs(origin, REPO, image.blobs())
    doc = json.loads(image.manifest)
    doc["annotations"] = {"pad": "y" * (3 * 1024 * 1024)}
    body = json.dumps(doc).encode()
    resp = await put_manifest(origin, REPO, "big", body, mt.OCI_MANIFEST)
    assert resp.status == 201, await resp.text()
    got = await origin.get(f"/v2/{REPO}/manifests/big")
    assert await got.read() == body


@pytest.mark.parametrize("tag", [".INVALID", "-dash", "a" * 129, "t@g"])
async def test_bad_tag_on_put_is_tag_invalid(origin, tag):
    image = make_image(seed=161)
    await seed_blobs(origin, REPO, image.blobs())
    before = snapshot(origin.root)
    resp = await put_manifest(origin, REPO, tag, image.manifest, image.media_type)
    assert resp.status == 400
    assert await error_code(resp) == "TAG_INVALID"
    assert snapshot(origin.root) == before


@pytest.mark.parametrize("name", ["Upper/case", "a//b", "-lead", "x" * 256, "a/..b", "trail_"])
async def test_bad_name_is_name_invalid(origin, name):
    image = make_image(seed=171)
    before = snapshot(origin.root)
    resp = await put_manifest(origin, name, "v1", image.manifest, image.media_type)
    assert resp.status == 400
    assert await error_code(resp) == "NAME_INVALID"
    got = await origin.get(f"/v2/{name}/manifests/v1")
    assert got.status == 400
    assert snapshot(origin.root) == before


async def test_bad_digest_reference_is_digest_invalid(origin):
    resp = await origin.get(f"/v2/{REPO}/manifests/sha256:1234")
    assert resp.status == 400
    assert await error_code(resp) == "DIGEST_INVALID"


@pytest.mark.parametrize("ref", ["nope", ".INVALID_MANIFEST_NAME", "sha256:" + "0" * 64])
async def test_unknown_manifest_is_404(origin, ref):
    await push_image(origin, REPO, make_image(seed=181), "v1")
    resp = await origin.get(f"/v2/{REPO}/manifests/{ref}")
    assert resp.status == 404
    assert await error_code(resp) == "MANIFEST_UNKNOWN"
    head = await origin.head(f"/v2/{REPO}/manifests/{ref}")
    assert head.status == 404
    other_repo = await origin.get(f"/v2/other/manifests/{ref}")
    assert other_repo.status == 404


async def test_digest_known_only_in_another_repository_is_404(origin):
    image = make_image(seed=191)
    await push_image(origin, "other/repo", image, "v1")
    resp = await origin.get(f"/v2/{REPO}/manifests/{image.digest}")
    assert resp.status == 404
    assert await error_code(resp) == "MANIFEST_UNKNOWN"


# -- delete ---------------------------------------------------------------------------------
async def test_delete_by_digest_removes_revision_and_its_tags(origin):
    a, b = make_image(seed=201), make_image(seed=202)
    await push_image(origin, REPO, a, "one")
    await push_image(origin, REPO, a, "two")
    await push_image(origin, REPO, b, "keep")
    resp = await origin.delete(f"/v2/{REPO}/manifests/{a.digest}")
    assert resp.status == 202
    for ref in ("one", "two", a.digest):
        assert (await origin.get(f"/v2/{REPO}/manifests/{ref}")).status == 404
    listed = await (await origin.get(f"/v2/{REPO}/tags/list")).json()
    assert listed["tags"] == ["keep"]
    again = await origin.delete(f"/v2/{REPO}/manifests/{a.digest}")
    assert again.status == 404
    assert await error_code(again) == "MANIFEST_UNKNOWN"


async def test_delete_by_tag_untags_only(origin):
    image = make_image(seed=211)
    await push_image(origin, REPO, image, "gone")
    resp = await origin.delete(f"/v2/{REPO}/manifests/gone")
    assert resp.status == 202
    assert (await origin.get(f"/v2/{REPO}/manifests/gone")).status == 404
    assert (await origin.get(f"/v2/{REPO}/manifests/{image.digest}")).status == 200
    assert (await origin.delete(f"/v2/{REPO}/manifests/gone")).status == 404


async def test_delete_then_repush(origin):
    image = make_image(seed=221)
    await push_image(origin, REPO, image, "v1")
    assert (await origin.delete(f"/v2/{REPO}/manifests/{image.digest}")).status == 202
    await push_image(origin, REPO, image, "v1")
    got = await origin.get(f"/v2/{REPO}/manifests/v1")
    assert await got.read() == image.manifest


async def test_delete_disabled_is_405_unsupported(aiohttp_client, tmp_path):
    client = await aiohttp_client(build_app(tmp_path, delete_enabled=False))
    image = make_image(seed=231)
    await push_image(client, REPO, image, "v1")
    before = snapshot(tmp_path)
    for ref in ("v1", image.digest):
        resp = await client.delete(f"/v2/{REPO}/manifests/{ref}")
        assert resp.status == 405
        assert await error_code(resp) == "UNSUPPORTED"
    assert snapshot(tmp_path) == before


async def test_read_only_refuses_put_and_delete(aiohttp_client, tmp_path):
    client = await aiohttp_client(build_app(tmp_path, readonly=True))
    image = make_image(seed=241)
    await seed_blobs(client, REPO, image.blobs())
    before = snapshot(tmp_path)
    resp = await put_manifest(client, REPO, "v1", image.manifest, image.media_type)
    assert resp.status == 405
    assert await error_code(resp) == "UNSUPPORTED"
    assert snapshot(tmp_path) == before


async def test_tag_left_pointing_at_a_deleted_revision_is_404_and_removable(origin):
    image = make_image(seed=251)
    await push_image(origin, REPO, image, "v1")
    await origin.app[state.REPOS].unlink_revision(REPO, Digest.parse(image.digest))
    for method in ("GET", "HEAD"):
        resp = await origin.request(method, f"/v2/{REPO}/manifests/v1")
        assert resp.status == 404
    assert (await origin.delete(f"/v2/{REPO}/manifests/v1")).status == 202
    listed = await (await origin.get(f"/v2/{REPO}/tags/list")).json()
    assert listed["tags"] == []


async def test_repush_of_stored_manifest_does_not_rewrite_the_blob(origin):
    image = make_image(seed=261)
    await push_image(origin, REPO, image, "v1")
    blob = (
        origin.root
        / "docker/registry/v2/blobs/sha256"
        / image.digest[7:9]
        / image.digest[7:]
        / "data"
    )
    inode = blob.stat().st_ino
    await push_image(origin, REPO, image, "v2")
    assert blob.stat().st_ino == inode
    assert blob.read_bytes() == image.manifest


# -- shapes the conformance suites push ---------------------------------------------------------
async def test_nested_index_and_config_only_manifest_are_accepted(origin):
    image = make_image(seed=271)
    await seed_blobs(origin, REPO, image.blobs())
    doc = json.loads(image.manifest)
    doc["layers"] = []  # "manifest upload with no layers"
    no_layers = json.dumps(doc).encode()
    assert (await put_manifest(origin, REPO, "nolayers", no_layers, mt.OCI_MANIFEST)).status == 201
    desc = {
        "mediaType": mt.OCI_MANIFEST,
        "digest": "sha256:" + hashlib.sha256(no_layers).hexdigest(),
        "size": len(no_layers),
    }
    inner = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [desc]}
    ).encode()
    inner_desc = {
        "mediaType": mt.OCI_INDEX,
        "digest": "sha256:" + hashlib.sha256(inner).hexdigest(),
        "size": len(inner),
    }
    outer = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [inner_desc]}
    ).encode()
    for body in (inner, outer):
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        resp = await put_manifest(origin, REPO, digest, body, mt.OCI_INDEX)
        assert resp.status == 201, await resp.text()
        got = await origin.get(f"/v2/{REPO}/manifests/{digest}", headers={"Accept": mt.OCI_INDEX})
        assert await got.read() == body


async def test_unknown_fields_data_field_and_nondistributable_layers_are_accepted(origin):
    image = make_image(seed=281)
    await seed_blobs(origin, REPO, image.blobs())
    doc = json.loads(image.manifest)
    doc["config"]["data"] = "e30="
    doc["config"]["newUnspecifiedField"] = "aGVsbG8="
    doc["x-custom"] = {"anything": [1, 2, 3]}
    foreign = "sha256:" + "ab" * 32
    doc["layers"].append(
        {
            "mediaType": mt.OCI_LAYER_NONDIST_GZIP,
            "digest": foreign,
            "size": 123456,
            "urls": [f"https://store.example.com/blobs/{foreign}"],
        }
    )
    body = json.dumps(doc, indent="\t").encode()
    resp = await put_manifest(origin, REPO, "custom", body, mt.OCI_MANIFEST)
    assert resp.status == 201, await resp.text()
    got = await origin.get(f"/v2/{REPO}/manifests/custom")
    assert await got.read() == body
