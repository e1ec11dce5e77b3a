"""The edge application as a whole: upstream errors relayed without upstream URLs."""

from __future__ import annotations

from harness.registry import DockerRegistry
from regcore import errors
from tests.edge.conftest import MakeEdge, sha256


async def test_upstream_refusal_is_relayed_with_its_code_but_without_the_upstream_url(
    docker_registry: DockerRegistry, make_edge: MakeEdge
) -> None:
    e = await make_edge({"local": docker_registry.url})
    for path in (
        f"/v2/team/app/blobs/{sha256(b'absent')}",
        "/v2/team/app/manifests/absent",
        "/v2/team/app/tags/list",
    ):
        resp = await e.client.get(path)
        body = await resp.text()
        assert resp.status == 404, (path, body)
        entry = (await resp.json())["errors"][0]
        assert entry["code"] in ("BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "NAME_UNKNOWN"), body
        assert entry["detail"] == "upstream answered 404", body
        assert docker_registry.url.split("://", 1)[1] not in body


def test_from_upstream_is_a_field_of_every_registry_error() -> None:
    assert errors.BlobUnknown("x").from_upstream is False
    assert errors.Unauthorized("x", from_upstream=True).from_upstream is True
    both = errors.RegistryErrors([errors.Denied(from_upstream=True), errors.BlobUnknown()])
    assert both.from_upstream is True
