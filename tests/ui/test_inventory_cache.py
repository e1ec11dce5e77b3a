"""The UI's inventory cache (origin/ui/inventory.py): a second view does not walk the root
again; the origin's own writes (push, tag and manifest DELETE, retention, GC) show on the next
view; changes made outside the process (a second origin process on the same root, files
removed by hand) show once ``quayside.inventory.ui_refresh`` has passed, not before (the
cache's clock is a fake one there); access control is unchanged.

Real origin applications on loopback, real HTTP; the second origin is a child process
(``harness.servers.OriginProcess``) running this checkout's code. Directory reads under the ``repositories``
tree are counted by wrapping ``os.listdir``/``os.scandir`` (``os.walk`` uses the latter).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness import oci_http
from harness.images import KiB, make_image
from harness.servers import OriginProcess
from origin.rootlock import TOKEN_HEADER, read_token
from origin.ui.keys import UI
from regcore.digest import Digest
from regcore.storage.layout import Layout
from tests.ui.conftest import UiOrigin, UiOriginFactory, write_users
from tests.ui.content import RULES, USERS, basic


class ScanCounter:
    """Directory listings of paths under ``root`` since :meth:`reset`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.root = str(root)
        self.calls: list[str] = []
        listdir, scandir = os.listdir, os.scandir

        def counted(real: Any) -> Any:
            def wrapper(path: Any = ".") -> Any:
                p = os.fspath(path)
                if isinstance(p, str) and p.startswith(self.root):
                    self.calls.append(p)
                return real(path)

            return wrapper

        monkeypatch.setattr(os, "listdir", counted(listdir))
        monkeypatch.setattr(os, "scandir", counted(scandir))

    def reset(self) -> None:
        self.calls.clear()


REPO_ROOT = Path(__file__).resolve().parents[2]
SIZE_RE = re.compile(r'<dt>Size</dt><dd><span title="(\d+) bytes">')


def tag_href(name: str, tag: str) -> str:
    return f'href="/ui/r/{name}/-/tags/{tag}"'


async def push(origin: UiOrigin, name: str, tag: str, seed: int) -> str:
    return await push_to(origin.base_url, name, tag, seed)


async def push_to(base_url: str, name: str, tag: str, seed: int) -> str:
    image = make_image(layer_sizes=(4 * KiB,), seed=seed, label=f"{name}-{tag}")
    async with aiohttp.ClientSession(headers=basic("alice")) as s:
        return await oci_http.push_image(s, base_url, name, tag, image)


async def delete(origin: UiOrigin, name: str, reference: str) -> None:
    async with (
        aiohttp.ClientSession(headers=basic("alice")) as s,
        s.delete(f"{origin.base_url}/v2/{name}/manifests/{reference}") as resp,
    ):
        assert resp.status == 202, await resp.text()


async def page(v: Any, path: str) -> str:
    resp, body = await v.get(path)
    assert resp.status == 200, body
    return body


async def test_second_view_does_not_walk_the_storage_again(
    ui_origin: UiOriginFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = await ui_origin()
    v = origin.browser()
    await v.sign_in("alice")
    paths = ("/ui/", "/ui/r/team/app/", "/ui/r/public/base/")
    for path in paths:
        await page(v, path)
    scans = ScanCounter(monkeypatch, Layout(origin.root).repositories)
    for path in paths:
        body = await page(v, path)
        if path == "/ui/r/team/app/":
            assert tag_href("team/app", "1.0") in body and tag_href("team/app", "multi") in body
    assert scans.calls == []


async def test_own_writes_show_on_the_next_view(
    ui_origin: UiOriginFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = await ui_origin(
        overrides={
            "storage.delete.enabled": True,
            "quayside.inventory.ui_refresh": "1h",  # only invalidation can explain a change
            "quayside.retention.policies": [{"repositories": "team/ret", "keep_last": 1}],
        }
    )
    v = origin.browser()
    await v.sign_in("alice")
    body = await page(v, "/ui/r/team/app/")
    assert tag_href("team/app", "2.0") not in body
    assert 'href="/ui/r/team/new/"' not in await page(v, "/ui/")

    await push(origin, "team/app", "2.0", seed=101)  # a new tag
    assert tag_href("team/app", "2.0") in await page(v, "/ui/r/team/app/")
    await push(origin, "team/new", "a", seed=102)  # a new repository
    assert 'href="/ui/r/team/new/"' in await page(v, "/ui/")

    await delete(origin, "team/app", "2.0")  # a tag DELETE
    assert tag_href("team/app", "2.0") not in await page(v, "/ui/r/team/app/")

    digest = await push(origin, "team/app", "3.0", seed=103)
    assert tag_href("team/app", "3.0") in await page(v, "/ui/r/team/app/")
    await delete(origin, "team/app", digest)  # a manifest DELETE drops its tags
    assert tag_href("team/app", "3.0") not in await page(v, "/ui/r/team/app/")

    await push(origin, "team/ret", "old", seed=104)
    await asyncio.sleep(0.02)  # distinct push times: keep_last keeps the newer one
    await push(origin, "team/ret", "new", seed=105)
    body = await page(v, "/ui/r/team/ret/")
    assert tag_href("team/ret", "old") in body and tag_href("team/ret", "new") in body
    token = read_token(Layout(origin.root))
    assert token
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{origin.base_url}/_quayside/admin/retention", headers={TOKEN_HEADER: token}
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        await resp.read()
    assert not (Layout(origin.root).tag_dir("team/ret", "old")).exists()
    body = await page(v, "/ui/r/team/ret/")
    assert tag_href("team/ret", "old") not in body and tag_href("team/ret", "new") in body


async def admin_run(origin: UiOrigin, job: str, **query: str) -> dict[str, Any]:
    """POST ``/_quayside/admin/<job>`` (what an operator runs); the report of its last line."""
    token = read_token(Layout(origin.root))
    assert token
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{origin.base_url}/_quayside/admin/{job}",
            params=query,
            headers={TOKEN_HEADER: token},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        lines = (await resp.text()).splitlines()
    last = json.loads(lines[-1])
    assert "report" in last, last
    return last["report"]  # type: ignore[no-any-return]


def shown_bytes(body: str) -> int:
    """The repository page's total size (``<dt>Size</dt><dd><span title="N bytes">``)."""
    match = SIZE_RE.search(body)
    assert match, body
    return int(match.group(1))


async def test_garbage_collection_shows_on_the_next_view(ui_origin: UiOriginFactory) -> None:
    """GC removes files itself (not through ``Repositories``), so only the invalidation when a
    run ends (``OriginOps._after_maintenance``) can make the next view rescan: a manifest
    DELETE leaves its layer links, which the page counts; GC prunes them (and their blobs)."""
    origin = await ui_origin(
        overrides={
            "storage.delete.enabled": True,
            "quayside.inventory.ui_refresh": "1h",  # only invalidation can explain a change
        }
    )
    v = origin.browser()
    await v.sign_in("alice")
    await push(origin, "team/gc", "keep", seed=301)
    digest = await push(origin, "team/gc", "drop", seed=302)
    await delete(origin, "team/gc", digest)  # its layer links (config, layer) stay
    body = await page(v, "/ui/r/team/gc/")  # cached now
    assert tag_href("team/gc", "keep") in body and tag_href("team/gc", "drop") not in body
    before = shown_bytes(body)
    assert shown_bytes(await page(v, "/ui/r/team/gc/")) == before  # the cache answers

    report = await admin_run(origin, "gc", grace="0s")
    pruned = {d for repo, d in report["links_pruned"] if repo == "team/gc"}
    assert pruned, report  # the dropped image's config and layer
    freed = sum(size for d, size in report["blobs_deleted"] if d in pruned)
    assert {d for d, _ in report["blobs_deleted"]} >= pruned, report  # held nowhere else
    assert freed > 0
    layout = Layout(origin.root)
    assert not any(layout.layer_link("team/gc", Digest.parse(d)).exists() for d in pruned)

    body = await page(v, "/ui/r/team/gc/")
    assert shown_bytes(body) == before - freed
    assert tag_href("team/gc", "keep") in body


class FakeClock:
    """A monotonic clock that moves only when told (the cache's ``clock``)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


async def test_changes_outside_the_process_show_within_the_refresh_bound(
    ui_origin: UiOriginFactory, tmp_path: Path
) -> None:
    ttl = 0.5
    root = tmp_path / "shared"
    origin = await ui_origin(root=root, overrides={"quayside.inventory.ui_refresh": f"{ttl}s"})
    cache = origin.app[UI].cache
    assert cache.ttl == ttl  # the setting reaches the cache
    clock = cache.clock = FakeClock()  # time moves only when this test says
    # A second origin on the same root, in its own process (this checkout's code, the same
    # users and rules): nothing shared with the first but the disk, as with another origin
    # or a registry:2 on that root.
    users = write_users(tmp_path / "htpasswd-other", USERS)
    other = OriginProcess(
        root=root,
        workdir=tmp_path / "other",
        env={"PYTHONPATH": str(REPO_ROOT)},
        config={
            "auth": {"htpasswd": {"realm": "qs-ui", "path": str(users)}},
            "quayside": {"auth": {"access": RULES}},
        },
    )
    try:
        await asyncio.to_thread(other.start)
        v = origin.browser()
        await v.sign_in("alice")
        assert tag_href("team/app", "ext") not in await page(v, "/ui/r/team/app/")
        assert 'href="/ui/r/team/other/"' not in await page(v, "/ui/")  # both cached now

        await push_to(other.url, "team/app", "ext", seed=201)
        await push_to(other.url, "team/other", "1", seed=202)
        assert Layout(root).tag_dir("team/app", "ext").is_dir()  # on the shared disk
        clock.now += 0.9 * ttl  # within the refresh bound the cached scan is used
        assert tag_href("team/app", "ext") not in await page(v, "/ui/r/team/app/")
        assert 'href="/ui/r/team/other/"' not in await page(v, "/ui/")
        clock.now += 0.1 * ttl + 0.01  # the bound has passed since the scans started
        assert tag_href("team/app", "ext") in await page(v, "/ui/r/team/app/")
        assert 'href="/ui/r/team/other/"' in await page(v, "/ui/")

        # A tag removed by hand (as registry:2 deletes one: its directory goes).
        assert tag_href("team/app", "1.0") in await page(v, "/ui/r/team/app/")
        shutil.rmtree(Layout(root).tag_dir("team/app", "1.0"))
        clock.now += 0.9 * ttl
        assert tag_href("team/app", "1.0") in await page(v, "/ui/r/team/app/")
        clock.now += 0.1 * ttl + 0.01
        assert tag_href("team/app", "1.0") not in await page(v, "/ui/r/team/app/")
    finally:
        await asyncio.to_thread(other.close)
    assert other.server_errors() == []


async def test_access_control_is_unchanged_with_a_warm_cache(ui_origin: UiOriginFactory) -> None:
    origin = await ui_origin()
    erin = origin.browser()
    await erin.sign_in("erin")
    assert 'href="/ui/r/other/secret/"' in await page(erin, "/ui/")
    assert "1" in await page(erin, "/ui/r/other/secret/")  # cached now
    carol = origin.browser()
    await carol.sign_in("carol")
    body = await page(carol, "/ui/")
    assert 'href="/ui/r/other/secret/"' not in body and 'href="/ui/r/team/app/"' in body
    resp, _ = await carol.get("/ui/r/other/secret/")
    assert resp.status == 403
    anonymous = origin.browser()
    body = await page(anonymous, "/ui/")
    assert "other/secret" not in body and "team/app" not in body
    resp, _ = await anonymous.get("/ui/r/other/secret/")
    assert resp.status == 303
