"""Referrers API: manifests pushed with ``subject`` are listed for that subject, filterable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness.images import make_image, sha256_digest
from origin import state
from origin.app import create_app
from regcore import mediatypes as mt
from regcore.config import MaintenanceConfig, OriginConfig, StorageConfig
from regcore.digest import Digest

REPO = "team/app"
TYPE_A = "application/vnd.example.sbom.v1"
TYPE_B = "application/vnd.example.signature.v1"
EMPTY = b"{}"
EMPTY_DESC = {"mediaType": mt.OCI_EMPTY, "digest": sha256_digest(EMPTY), "size": 2}
NOTE = "org.example.note"


@pytest.fixture
async def origin(aiohttp_client, tmp_path: Path):
    config = OriginConfig(storage=StorageConfig(rootdirectory=str(tmp_path), delete_enabled=True))
    client = await aiohttp_client(create_app(config))
    client.root = tmp_path
    return client


async def seed(client: Any, name: str, *blobs: bytes) -> None:
    for data in blobs:
        dg = await client.app[state.STORE].put_bytes(data)
        await client.app[state.REPOS].link_blob(name, dg)


async def put(client: Any, name: str, body: bytes, media_type: str, ref: str | None = None) -> Any:
    ref = ref or sha256_digest(body)
    return await client.put(
        f"/v2/{name}/manifests/{ref}", data=body, headers={"Content-Type": media_type}
    )


def subject_desc(body: bytes, media_type: str = mt.OCI_MANIFEST) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(body), "size": len(body)}


def artifact_by_config(subject: dict[str, Any], blob: bytes, note: str) -> bytes:
    """artifactType carried by the config's media type (conformance's "config artifact")."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": TYPE_A, "digest": sha256_digest(blob), "size": len(blob)},
            "layers": [EMPTY_DESC],
            "subject": subject,
            "annotations": {NOTE: note},
        },
        indent="\t",
    ).encode()


def artifact_by_field(
    subject: dict[str, Any], blob: bytes, note: str, atype: str = TYPE_B
) -> bytes:
    """artifactType field with the empty config (conformance's "layer artifact")."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "artifactType": atype,
            "config": EMPTY_DESC,
            "layers": [{"mediaType": atype, "digest": sha256_digest(blob), "size": len(blob)}],
            "subject": subject,
            "annotations": {NOTE: note},
        }
    ).encode()


async def referrers(client: Any, subject: str, name: str = REPO, **params: str) -> tuple[Any, dict]:
    resp = await client.get(f"/v2/{name}/referrers/{subject}", params=params)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == mt.OCI_INDEX
    return resp, json.loads(await resp.read())


@pytest.fixture
async def populated(origin):
    """A subject image and three referrers: config-typed, field-typed and an index."""
    image = make_image(seed=7)
    for data in image.blobs().values():
        await seed(origin, REPO, data)
    await seed(origin, REPO, EMPTY, b"sbom bytes", b"signature bytes")
    subject = subject_desc(image.manifest)
    a = artifact_by_config(subject, b"sbom bytes", "config a")
    b = artifact_by_field(subject, b"signature bytes", "layer b")
    for body in (a, b):
        resp = await put(origin, REPO, body, mt.OCI_MANIFEST)
        assert resp.status == 201, await resp.text()
        assert resp.headers["OCI-Subject"] == image.digest  # subject not pushed yet: fine
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "artifactType": "application/vnd.example.bundle",
            "manifests": [subject_desc(a), subject_desc(b)],
            "subject": subject,
            "annotations": {NOTE: "index"},
        }
    ).encode()
    resp = await put(origin, REPO, index, mt.OCI_INDEX)
    assert resp.status == 201, await resp.text()
    assert resp.headers["OCI-Subject"] == image.digest
    resp = await put(origin, REPO, image.manifest, image.media_type, ref="v1")
    assert resp.status == 201
    assert "OCI-Subject" not in resp.headers
    return {"subject": image.digest, "a": a, "b": b, "index": index}


async def test_all_referrers_listed_with_descriptor_fields(origin, populated):
    resp, body = await referrers(origin, populated["subject"])
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == mt.OCI_INDEX
    assert "OCI-Filters-Applied" not in resp.headers
    got = {d["digest"]: d for d in body["manifests"]}
    expected = {
        sha256_digest(populated["a"]): (mt.OCI_MANIFEST, TYPE_A, "config a", len(populated["a"])),
        sha256_digest(populated["b"]): (mt.OCI_MANIFEST, TYPE_B, "layer b", len(populated["b"])),
        sha256_digest(populated["index"]): (
            mt.OCI_INDEX,
            "application/vnd.example.bundle",
            "index",
            len(populated["index"]),
        ),
    }
    assert set(got) == set(expected)
    for digest, (media_type, atype, note, size) in expected.items():
        assert got[digest] == {
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "artifactType": atype,
            "annotations": {NOTE: note},
        }


@pytest.mark.parametrize(("atype", "key"), [(TYPE_A, "a"), (TYPE_B, "b")])
async def test_artifact_type_filter(origin, populated, atype, key):
    resp, body = await referrers(origin, populated["subject"], artifactType=atype)
    assert resp.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in body["manifests"]] == [sha256_digest(populated[key])]


async def test_filter_matching_nothing_is_empty_but_applied(origin, populated):
    resp, body = await referrers(origin, populated["subject"], artifactType="application/none")
    assert resp.headers["OCI-Filters-Applied"] == "artifactType"
    assert body["manifests"] == []


@pytest.mark.parametrize("name", [REPO, "no/such/repo"])
async def test_unknown_subject_is_an_empty_index(origin, name):
    _, body = await referrers(origin, Digest.of(b"hello world").__str__(), name=name)
    assert body == {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}


async def test_dangling_subject_is_listed(origin):
    await seed(origin, REPO, EMPTY, b"sig")
    ghost = {"mediaType": mt.OCI_MANIFEST, "digest": str(Digest.of(b"never pushed")), "size": 12}
    body = artifact_by_field(ghost, b"sig", "c")
    resp = await put(origin, REPO, body, mt.OCI_MANIFEST)
    assert resp.status == 201
    assert resp.headers["OCI-Subject"] == ghost["digest"]
    _, listed = await referrers(origin, ghost["digest"])
    assert [d["digest"] for d in listed["manifests"]] == [sha256_digest(body)]


async def test_referrers_are_per_repository(origin, populated):
    _, body = await referrers(origin, populated["subject"], name="other/repo")
    assert body["manifests"] == []


async def test_deleted_referrer_drops_out(origin, populated):
    a = sha256_digest(populated["a"])
    assert (await origin.delete(f"/v2/{REPO}/manifests/{a}")).status == 202
    _, body = await referrers(origin, populated["subject"])
    assert a not in {d["digest"] for d in body["manifests"]}
    assert len(body["manifests"]) == 2


async def test_index_is_rebuilt_for_a_root_without_one(origin, populated):
    """A root written by registry:2 has no _referrers tree: it is rebuilt from revisions."""
    tree = origin.root / "docker/registry/v2/repositories" / REPO / "_manifests" / "_referrers"
    assert tree.is_dir()
    shutil.rmtree(tree)
    _, body = await referrers(origin, populated["subject"])
    assert len(body["manifests"]) == 3
    assert tree.is_dir()


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "0" * 32, "notadigest"])
async def test_bad_digest_is_digest_invalid(origin, digest):
    resp = await origin.get(f"/v2/{REPO}/referrers/{digest}")
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["code"] == "DIGEST_INVALID"


async def test_bad_name_is_name_invalid(origin):
    resp = await origin.get(f"/v2/UPPER/referrers/{Digest.of(b'x')}")
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["code"] == "NAME_INVALID"


async def test_first_push_with_subject_indexes_older_referrers(origin, populated):
    """Referrers stored before the index existed (registry:2 wrote them) are not lost when a
    new referrer creates the index."""
    tree = origin.root / "docker/registry/v2/repositories" / REPO / "_manifests" / "_referrers"
    shutil.rmtree(tree)
    subject = subject_desc(json.dumps({}).encode())  # any subject: not the populated one
    await seed(origin, REPO, b"late")
    resp = await put(origin, REPO, artifact_by_field(subject, b"late", "late"), mt.OCI_MANIFEST)
    assert resp.status == 201
    # the push rebuilt the index first, so the populated subject's referrers are there too
    assert len([p for p in tree.rglob("link")]) == 4
    _, body = await referrers(origin, populated["subject"])
    assert len(body["manifests"]) == 3


async def test_read_only_origin_lists_referrers_without_writing(aiohttp_client, tmp_path):
    config = OriginConfig(storage=StorageConfig(rootdirectory=str(tmp_path)))
    writer = await aiohttp_client(create_app(config))
    await seed(writer, REPO, EMPTY, b"sig")
    subject = subject_desc(b"some subject")
    body = artifact_by_field(subject, b"sig", "ro")
    assert (await put(writer, REPO, body, mt.OCI_MANIFEST)).status == 201
    tree = tmp_path / "docker/registry/v2/repositories" / REPO / "_manifests" / "_referrers"
    shutil.rmtree(tree)
    await writer.close()

    ro = OriginConfig(
        storage=StorageConfig(
            rootdirectory=str(tmp_path), maintenance=MaintenanceConfig(readonly=True)
        )
    )
    reader = await aiohttp_client(create_app(ro))
    _, listed = await referrers(reader, subject["digest"])
    assert [d["digest"] for d in listed["manifests"]] == [sha256_digest(body)]
    assert not tree.exists()
