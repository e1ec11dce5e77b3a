"""Tags list and catalog: sorting, ``n``/``last`` pagination with ``Link``, error codes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from harness.images import make_image
from origin import state
from origin.app import create_app
from origin.pagination import paginate
from regcore.config import OriginConfig, StorageConfig
from regcore.digest import Digest

REPO = "team/app"


@pytest.fixture
async def origin(aiohttp_client, tmp_path: Path):
    config = OriginConfig(storage=StorageConfig(rootdirectory=str(tmp_path), delete_enabled=True))
    return await aiohttp_client(create_app(config))


async def push(client: Any, name: str, seed: int, *tags: str) -> str:
    image = make_image(seed=seed)
    for digest, data in image.blobs().items():
        await client.app[state.STORE].put_bytes(data, Digest.parse(digest))
        await client.app[state.REPOS].link_blob(name, Digest.parse(digest))
    for ref in tags or (image.digest,):
        resp = await client.put(
            f"/v2/{name}/manifests/{ref}",
            data=image.manifest,
            headers={"Content-Type": image.media_type},
        )
        assert resp.status == 201, await resp.text()
    return image.digest


def next_link(resp: Any) -> str | None:
    header = resp.headers.get("Link")
    if header is None:
        return None
    m = re.fullmatch(r'<([^>]+)>; rel="next"', header)
    assert m, header
    return m.group(1)


async def error_code(resp: Any) -> str:
    return (await resp.json())["errors"][0]["code"]


TAGS = ["v1.0", "latest", "Alpha", "beta", "v2", "0.9", "_under", "v1.1"]


async def test_tags_list_is_complete_and_sorted(origin):
    await push(origin, REPO, 1, *TAGS)
    resp = await origin.get(f"/v2/{REPO}/tags/list")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert await resp.json() == {"name": REPO, "tags": sorted(TAGS)}
    assert "Link" not in resp.headers


@pytest.mark.parametrize("n", [1, 3, 7, 8])
async def test_tags_pagination_follows_link_to_the_end(origin, n):
    await push(origin, REPO, 2, *TAGS)
    seen: list[str] = []
    url: str | None = f"/v2/{REPO}/tags/list?n={n}"
    pages = 0
    while url is not None and pages < 20:
        resp = await origin.get(url)
        assert resp.status == 200
        body = await resp.json()
        assert len(body["tags"]) <= n
        seen.extend(body["tags"])
        url = next_link(resp)
        if url is not None:
            assert len(body["tags"]) == n  # a short page only at the end
            assert url.startswith(f"/v2/{REPO}/tags/list?")
        pages += 1
    assert seen == sorted(TAGS)
    assert pages == -(-len(TAGS) // n)


async def test_tags_last_starts_after_the_given_tag(origin):
    await push(origin, REPO, 3, *TAGS)
    ordered = sorted(TAGS)
    resp = await origin.get(f"/v2/{REPO}/tags/list", params={"n": "2", "last": ordered[2]})
    assert (await resp.json())["tags"] == ordered[3:5]
    # last need not be a tag: "v1.05" sorts between v1.0 and v1.1
    resp = await origin.get(f"/v2/{REPO}/tags/list", params={"last": "v1.05"})
    assert (await resp.json())["tags"] == [t for t in ordered if t > "v1.05"]
    resp = await origin.get(f"/v2/{REPO}/tags/list", params={"last": "zzz"})
    assert (await resp.json())["tags"] == []
    assert "Link" not in resp.headers


async def test_tags_n_zero_is_an_empty_page(origin):
    await push(origin, REPO, 4, *TAGS)
    resp = await origin.get(f"/v2/{REPO}/tags/list?n=0")
    assert resp.status == 200
    assert await resp.json() == {"name": REPO, "tags": []}
    assert "Link" not in resp.headers


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "1e3", "0x10", ""])
async def test_tags_bad_n_is_pagination_number_invalid(origin, n):
    await push(origin, REPO, 5, "v1")
    resp = await origin.get(f"/v2/{REPO}/tags/list", params={"n": n})
    if n == "":
        assert resp.status == 200  # an empty n is no n
        return
    assert resp.status == 400
    assert await error_code(resp) == "PAGINATION_NUMBER_INVALID"


async def test_tags_of_unknown_repository_is_name_unknown(origin):
    resp = await origin.get("/v2/no/such/repo/tags/list")
    assert resp.status == 404
    assert await error_code(resp) == "NAME_UNKNOWN"


async def test_tags_of_bad_name_is_name_invalid(origin):
    resp = await origin.get("/v2/Bad_Name/tags/list")
    assert resp.status == 400
    assert await error_code(resp) == "NAME_INVALID"


async def test_tags_list_reflects_untag(origin):
    await push(origin, REPO, 6, "a", "b")
    assert (await origin.delete(f"/v2/{REPO}/manifests/a")).status == 202
    assert (await (await origin.get(f"/v2/{REPO}/tags/list")).json())["tags"] == ["b"]


async def test_repository_with_untagged_manifest_lists_no_tags(origin):
    await push(origin, REPO, 7)
    resp = await origin.get(f"/v2/{REPO}/tags/list")
    assert resp.status == 200
    assert (await resp.json())["tags"] == []


# -- catalog --------------------------------------------------------------------------------
REPOS = ["a", "team/app", "team/app/sub", "team/zeta", "b-c/d.e", "x__y"]


async def test_catalog_lists_every_repository_with_manifests(origin):
    for i, name in enumerate(REPOS):
        await push(origin, name, 100 + i, "v1")
    # blobs only (an upload without a manifest) is not a repository yet, as in registry:2
    await origin.app[state.REPOS].link_blob("blobs/only", Digest.of(b"x"))
    resp = await origin.get("/v2/_catalog")
    assert resp.status == 200
    assert await resp.json() == {"repositories": sorted(REPOS)}
    assert "Link" not in resp.headers


@pytest.mark.parametrize("n", [1, 2, 4])
async def test_catalog_pagination_with_link(origin, n):
    for i, name in enumerate(REPOS):
        await push(origin, name, 200 + i, "v1")
    seen: list[str] = []
    url: str | None = f"/v2/_catalog?n={n}"
    for _ in range(20):
        if url is None:
            break
        resp = await origin.get(url)
        body = await resp.json()
        seen.extend(body["repositories"])
        url = next_link(resp)
        if url is not None:
            assert url.startswith("/v2/_catalog?")
            assert len(body["repositories"]) == n
    assert seen == sorted(REPOS)


async def test_catalog_n_zero_last_and_bad_n(origin):
    for i, name in enumerate(REPOS):
        await push(origin, name, 300 + i, "v1")
    resp = await origin.get("/v2/_catalog?n=0")
    assert await resp.json() == {"repositories": []}
    resp = await origin.get("/v2/_catalog", params={"last": "team/app"})
    assert (await resp.json())["repositories"] == [r for r in sorted(REPOS) if r > "team/app"]
    resp = await origin.get("/v2/_catalog?n=-5")
    assert resp.status == 400
    assert await error_code(resp) == "PAGINATION_NUMBER_INVALID"


async def test_empty_registry_has_an_empty_catalog(origin):
    resp = await origin.get("/v2/_catalog")
    assert resp.status == 200
    assert await resp.json() == {"repositories": []}


def test_paginate_caps_pages_and_links_to_the_rest():
    items = [f"r{i:05d}" for i in range(25)]
    page = paginate(items, {}, "/v2/_catalog", default_n=10)
    assert page.items == items[:10]
    assert page.link == '</v2/_catalog?n=10&last=r00009>; rel="next"'
    page = paginate(items, {"n": "1000"}, "/x", cap=20)
    assert page.items == items[:20]
    assert page.link == '</x?n=1000&last=r00019>; rel="next"'
    page = paginate(items, {"n": "5", "last": "r00022"}, "/x")
    assert page.items == items[23:]
    assert page.link is None
