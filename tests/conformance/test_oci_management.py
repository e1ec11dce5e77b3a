"""Conformance workflow 4: Content Management (``conformance/04_management_test.go``).

Setup pushes configs[3], the layer and manifests[3] under ``tagtest0`` and counts the tags; then
the tag is deleted, the manifest deleted by digest, the tag list must shrink, the blobs are
deleted and a deleted blob must be gone. ``state`` holds the suite's ``numTags`` and
``blobDeleteAllowed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import OciHttp, Reply, SuiteData, Target

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _tag_count(resp: Reply) -> int:
    """Parse a tag list strictly (the suite fails on a body that is not a ``TagList``)."""
    doc = resp.json()
    assert isinstance(doc, dict), resp.describe()
    tags = doc.get("tags") or []
    assert isinstance(tags, list), resp.describe()
    return len(tags)


# -- Setup -----------------------------------------------------------------------------------


async def test_setup_populate_config(oci: OciHttp, data: SuiteData) -> None:
    """Setup: "Populate registry with test config blob" (configs[3]) -> 2xx."""
    resp = await oci.push_blob(data.configs[3].content, data.configs[3].digest)
    assert 200 <= resp.status < 300, resp.describe()


async def test_setup_populate_layer(oci: OciHttp, data: SuiteData) -> None:
    """Setup: "Populate registry with test layer" -> 2xx."""
    resp = await oci.push_blob(data.layer.content, data.layer.digest)
    assert 200 <= resp.status < 300, resp.describe()


async def test_setup_populate_tag(oci: OciHttp, data: SuiteData, state: dict[str, Any]) -> None:
    """Setup: "Populate registry with test tag": manifests[3] as ``tagtest0`` -> 2xx."""
    resp = await oci.put_manifest(data.test_tag, data.manifests[3].content, OCI_MANIFEST)
    assert 200 <= resp.status < 300, resp.describe()
    state["tag_to_delete"] = data.test_tag


async def test_setup_count_tags(oci: OciHttp, state: dict[str, Any]) -> None:
    """Setup: "Check how many tags there are before anything gets deleted" -> 200 and a tag
    list."""
    resp = await oci.request("GET", "/v2/<name>/tags/list")
    assert resp.status == 200, resp.describe()
    state["num_tags"] = _tag_count(resp)


# -- Manifest delete -------------------------------------------------------------------------


@pytest.mark.reference_lacks("DELETE /manifests/<tag> -> 400 DIGEST_INVALID (tag deletion is v1.1)")
async def test_delete_tag(
    oci: OciHttp, data: SuiteData, state: dict[str, Any], target: Target
) -> None:
    """ "DELETE request to manifest tag should return 202, unless tag deletion is disallowed
    (400/405)": 202 from the origin (deletes enabled); on registry:2 also 405, or 400 whose
    first error code is ``UNSUPPORTED``."""
    tag = state.get("tag_to_delete", data.test_tag)
    resp = await oci.request("DELETE", f"/v2/<name>/manifests/{tag}")
    assert resp.status in target.accepts(202, reference_tolerates=(400, 405)), resp.describe()
    if resp.status == 400:
        codes = resp.error_codes()
        assert codes and codes[0] == "UNSUPPORTED", resp.describe()


async def test_delete_manifest_by_digest(oci: OciHttp, data: SuiteData, target: Target) -> None:
    """ "DELETE request to manifest (digest) should yield 202 response unless already deleted"
    -> 202 from the origin (deleting the tag left the manifest in place); registry:2 also
    404."""
    resp = await oci.request("DELETE", f"/v2/<name>/manifests/{data.manifests[3].digest}")
    assert resp.status in target.accepts(202, reference_tolerates=(404,)), resp.describe()


async def test_get_deleted_manifest(oci: OciHttp, data: SuiteData, target: Target) -> None:
    """ "GET request to deleted manifest URL should yield 404 response, unless delete is
    disallowed" -> 404 from the origin; registry:2 also 200 (deletes disabled)."""
    resp = await oci.request("GET", f"/v2/<name>/manifests/{data.manifests[3].digest}")
    assert resp.status in target.accepts(404, reference_tolerates=(200,)), resp.describe()


async def test_extra_deleted_manifest_is_gone(oci: OciHttp, data: SuiteData) -> None:
    """Beyond the suite: deletes are enabled on both servers here, so the manifest is really
    gone: GET by digest and by the old tag -> 404 ``MANIFEST_UNKNOWN``."""
    for ref in (data.manifests[3].digest, data.test_tag):
        resp = await oci.request("GET", f"/v2/<name>/manifests/{ref}")
        assert resp.status == 404, resp.describe()
        assert resp.error_codes()[:1] == ["MANIFEST_UNKNOWN"], resp.describe()


async def test_tags_list_reflects_deletion(oci: OciHttp, state: dict[str, Any]) -> None:
    """ "GET request to tags list should reflect manifest deletion": 200 with fewer tags than
    before (here: none left, and the list is still 200, not 404)."""
    assert "num_tags" in state, "setup did not count the tags"
    resp = await oci.request("GET", "/v2/<name>/tags/list")
    assert resp.status == 200, resp.describe()
    assert _tag_count(resp) < state["num_tags"], resp.describe()


# -- Blob delete -----------------------------------------------------------------------------


async def test_delete_blobs(
    oci: OciHttp, data: SuiteData, state: dict[str, Any], target: Target
) -> None:
    """ "DELETE request to blob URL should yield 202 response": the config blob, then the layer
    blob -> 202 each from the origin; registry:2 also 404 or 405 (405 on the layer means blob
    deletion is disallowed)."""
    ok = target.accepts(202, reference_tolerates=(404, 405))
    resp = await oci.request("DELETE", f"/v2/<name>/blobs/{data.configs[3].digest}")
    assert resp.status in ok, resp.describe()
    resp = await oci.request("DELETE", f"/v2/<name>/blobs/{data.layer.digest}")
    assert resp.status in ok, resp.describe()
    state["blob_delete_allowed"] = resp.status != 405


async def test_get_deleted_blob_404(
    oci: OciHttp, data: SuiteData, state: dict[str, Any], target: Target
) -> None:
    """ "GET request to deleted blob URL should yield 404 response" (when blob deletion is
    allowed: always on the origin; the suite's skip applies to registry:2 only). Both deleted
    blobs are gone, ``BLOB_UNKNOWN``."""
    if target.is_reference and not state.get("blob_delete_allowed", True):
        pytest.skip("registry:2: blob deletion is disallowed (RunOnlyIf blobDeleteAllowed)")
    for digest in (data.configs[3].digest, data.layer.digest):
        resp = await oci.request("GET", f"/v2/<name>/blobs/{digest}")
        assert resp.status == 404, resp.describe()
        assert resp.error_codes()[:1] == ["BLOB_UNKNOWN"], resp.describe()
