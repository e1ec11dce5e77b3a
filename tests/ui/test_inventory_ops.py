"""The UI over the operations inventory (``origin/inventory.py``: unique and shared bytes,
quota use, recorded pull times), when the origin has it. Skipped where that module is absent
(the UI then uses its own disk reading, tested in test_http_pages)."""

from __future__ import annotations

import re

import pytest

from tests.ui.conftest import UiOriginFactory
from tests.ui.content import basic

pytest.importorskip("origin.inventory", reason="the operations inventory is not on this branch")


async def test_pages_show_unique_and_shared_bytes_quota_use_and_pull_times(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin(overrides={"quayside.quotas": {"namespaces": {"team": "10MiB"}}})
    p = origin.published
    assert p is not None
    v = origin.browser()
    await v.sign_in("alice")
    _, body = await v.get("/ui/")
    assert '<th scope="col" class="num">Unique</th>' in body
    quotas = body[body.index('id="quotas"') :].split("</table>")[0]
    assert '<th scope="row">team</th>' in quotas
    assert f'title="{10 * 1024 * 1024} bytes"' in quotas
    assert f'title="{p.repo_bytes("team/app")} bytes"' in quotas  # the namespace's only repo
    row = body[body.index('href="/ui/r/team/app/"') :].split("</tr>")[0]
    assert "never" in row and "not recorded" not in row
    async with v.session.get(
        f"{origin.base_url}/v2/team/app/manifests/1.0", headers=basic("alice")
    ) as resp:
        assert resp.status == 200
    _, body = await v.get("/ui/r/team/app/")
    tag_row = body[body.index('href="/ui/r/team/app/-/tags/1.0"') :].split("</tr>")[0]
    assert len(re.findall(r"<time datetime=", tag_row)) == 2  # pushed and pulled
