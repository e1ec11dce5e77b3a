"""The origin's ``Accept`` negotiation of a Docker manifest list (the real app on a loopback
port): by tag, a client that lists manifest types but not the list type gets the list's
linux/amd64 child (its bytes and headers, GET and HEAD alike); by digest never. The same
answers from registry:2 and the edge: tests/integration/test_accept_parity.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from harness.images import ImageIndex, Platform, make_index
from origin import state
from regcore import mediatypes as mt
from tests.origin.test_manifests import build_app, error_code, push_image, put_manifest

REPO = "team/multi"
# arm64 first: the child is chosen by platform, not by position
PLATFORMS = (Platform("linux", "arm64", "v8"), Platform("linux", "amd64"))


@pytest.fixture
async def origin(aiohttp_client: Any, tmp_path: Any) -> Any:
    """A test client of the real origin app on a loopback port (root under ``tmp_path``)."""
    return await aiohttp_client(build_app(tmp_path))


async def push_list(origin: Any, tag: str = "multi", seed: int = 7) -> ImageIndex:
    index = make_index(flavour="docker", platforms=PLATFORMS, seed=seed)
    for image in index.images:
        await push_image(origin, REPO, image)
    resp = await put_manifest(origin, REPO, tag, index.manifest, index.media_type)
    assert resp.status == 201, await resp.text()
    return index


def amd64_of(index: ImageIndex) -> Any:
    return next(i for i in index.images if i.platform.architecture == "amd64")


@pytest.mark.parametrize(
    "accept",
    [
        mt.DOCKER_MANIFEST,
        f"{mt.OCI_MANIFEST}, {mt.DOCKER_MANIFEST}",
        f"{mt.OCI_INDEX}, {mt.DOCKER_MANIFEST}",
    ],
)
async def test_list_by_tag_is_narrowed_to_its_linux_amd64_child(origin, accept):
    index = await push_list(origin)
    child = amd64_of(index)
    got = await origin.get(f"/v2/{REPO}/manifests/multi", headers={"Accept": accept})
    assert got.status == 200, await got.text()
    assert await got.read() == child.manifest
    want = {
        "Content-Type": mt.DOCKER_MANIFEST,
        "Docker-Content-Digest": child.digest,
        "ETag": f'"{child.digest}"',
        "Content-Length": str(len(child.manifest)),
    }
    assert {k: got.headers.get(k) for k in want} == want
    head = await origin.head(f"/v2/{REPO}/manifests/multi", headers={"Accept": accept})
    assert head.status == 200
    assert await head.read() == b""
    assert {k: head.headers.get(k) for k in want} == want
    # by digest the list is never narrowed
    by_digest = await origin.get(f"/v2/{REPO}/manifests/{index.digest}", headers={"Accept": accept})
    assert by_digest.status == 200
    assert await by_digest.read() == index.manifest
    assert by_digest.headers["Docker-Content-Digest"] == index.digest


@pytest.mark.parametrize("accept", [None, "*/*", mt.DOCKER_MANIFEST_LIST])
async def test_list_served_whole_to_clients_taking_lists_or_naming_no_type(origin, accept):
    index = await push_list(origin)
    headers = {"Accept": accept} if accept else {}
    got = await origin.get(f"/v2/{REPO}/manifests/multi", headers=headers)
    assert got.status == 200
    assert await got.read() == index.manifest
    assert got.headers["Docker-Content-Digest"] == index.digest


async def test_schema2_child_refused_to_a_client_listing_only_oci_types(origin):
    await push_list(origin)
    for method in ("GET", "HEAD"):
        got = await origin.request(
            method, f"/v2/{REPO}/manifests/multi", headers={"Accept": mt.OCI_MANIFEST}
        )
        assert got.status == 400, method
        if method == "GET":
            body = await got.json()
            assert body["errors"][0]["code"] == "MANIFEST_INVALID"
            assert body["errors"][0]["message"] == "Schema 2 manifest not supported by client"


async def test_list_without_linux_amd64_or_whose_child_is_gone_is_manifest_unknown(origin):
    arm_only = make_index(flavour="docker", platforms=PLATFORMS[:1], seed=17)
    await push_image(origin, REPO, arm_only.images[0])
    resp = await put_manifest(origin, REPO, "arm", arm_only.manifest, arm_only.media_type)
    assert resp.status == 201
    index = await push_list(origin, seed=27)
    deleted = await origin.delete(f"/v2/{REPO}/manifests/{amd64_of(index).digest}")
    assert deleted.status == 202
    for tag in ("arm", "multi"):
        for method in ("GET", "HEAD"):
            got = await origin.request(
                method, f"/v2/{REPO}/manifests/{tag}", headers={"Accept": mt.DOCKER_MANIFEST}
            )
            assert got.status == 404, (tag, method)
            if method == "GET":
                assert await error_code(got) == "MANIFEST_UNKNOWN"
        whole = await origin.get(
            f"/v2/{REPO}/manifests/{tag}", headers={"Accept": mt.DOCKER_MANIFEST_LIST}
        )
        assert whole.status == 200


async def test_if_none_match_compares_the_child_served(origin):
    index = await push_list(origin)
    child = amd64_of(index)
    accept = {"Accept": mt.DOCKER_MANIFEST}
    same = await origin.get(
        f"/v2/{REPO}/manifests/multi", headers={**accept, "If-None-Match": f'"{child.digest}"'}
    )
    assert same.status == 304
    assert same.headers["Docker-Content-Digest"] == child.digest
    other = await origin.get(
        f"/v2/{REPO}/manifests/multi", headers={**accept, "If-None-Match": f'"{index.digest}"'}
    )
    assert other.status == 200
    assert await other.read() == child.manifest


async def test_narrowed_pull_records_the_tag_the_list_and_the_child(origin):
    index = await push_list(origin)
    child = amd64_of(index)
    got = await origin.get(f"/v2/{REPO}/manifests/multi", headers={"Accept": mt.DOCKER_MANIFEST})
    assert got.status == 200
    pulls = await asyncio.to_thread(origin.app[state.OPS].pulls_of, REPO)
    assert set(pulls.manifests) == {index.digest, child.digest}
    assert set(pulls.tags) == {"multi"}
