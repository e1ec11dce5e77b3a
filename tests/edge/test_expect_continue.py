"""``Expect: 100-continue`` on the edge: it takes no request body (every write under ``/v2/``
is 405 UNSUPPORTED), so a push announcing one gets the 405 instead of a ``100 Continue``, as
its connection's last answer. The real edge application on a loopback port, a raw socket
(:mod:`tests.expect100`); the upstream is a closed port, never asked.
"""

from __future__ import annotations

import pytest

from harness.ports import free_port
from tests.edge.conftest import MakeEdge, sha256
from tests.expect100 import refused, send_expecting

BODY = b"{}" * 2048


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", f"/v2/team/app/blobs/uploads/?digest={sha256(BODY)}"),
        ("PATCH", "/v2/team/app/blobs/uploads/0123456789abcdef0123456789abcdef"),
        ("PUT", "/v2/team/app/manifests/v1"),
    ],
)
async def test_push_with_expect_gets_405_and_no_100(
    make_edge: MakeEdge, method: str, target: str
) -> None:
    e = await make_edge({"local": f"http://127.0.0.1:{free_port()}"})
    ex = await send_expecting(e.client.server, method, target, BODY)
    assert ex.headers.get("allow") == "GET, HEAD"
    body = await refused(ex, 405, "UNSUPPORTED")
    assert "read-only pull-through mirror" in body["errors"][0]["message"]


async def test_push_without_expect_is_still_405(make_edge: MakeEdge) -> None:
    e = await make_edge({"local": f"http://127.0.0.1:{free_port()}"})
    resp = await e.client.put("/v2/team/app/manifests/v1", data=BODY)
    assert resp.status == 405
    assert (await resp.json())["errors"][0]["code"] == "UNSUPPORTED"
