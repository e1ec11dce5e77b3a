"""Conformance workflow 1: Pull (``conformance/01_pull_test.go``, "Pull" context).

Each test is one ginkgo ``Specify`` in the suite's order; its docstring quotes the spec's
description. Setup pushes configs[0], configs[1], the layer, manifests[0] under ``tagtest0`` and
manifests[1] by digest; teardown deletes them (manifests first, the suite's default
``OCI_DELETE_MANIFEST_BEFORE_BLOBS=true``). ``test_extra_*`` tests go beyond the suite (byte
equality, ``Range``); the README says which is which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import OciHttp, SuiteData

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT_OCI = {"Accept": OCI_MANIFEST}
OCTET = {"Content-Type": "application/octet-stream"}


def _ok_or_405(status: int) -> bool:
    return 200 <= status < 300 or status == 405


# -- Setup -----------------------------------------------------------------------------------


async def test_setup_populate_config0(oci: OciHttp, data: SuiteData) -> None:
    """Setup: "Populate registry with test blob" (configs[0]): POST a session, PUT with
    ``?digest=`` -> 2xx."""
    resp = await oci.push_blob(data.configs[0].content, data.configs[0].digest)
    assert 200 <= resp.status < 300, resp.describe()


async def test_setup_populate_config1(oci: OciHttp, data: SuiteData) -> None:
    """Setup: "Populate registry with test blob" (configs[1]) -> 2xx."""
    resp = await oci.push_blob(data.configs[1].content, data.configs[1].digest)
    assert 200 <= resp.status < 300, resp.describe()


async def test_setup_populate_layer(oci: OciHttp, data: SuiteData) -> None:
    """Setup: "Populate registry with test layer" -> 2xx."""
    resp = await oci.push_blob(data.layer.content, data.layer.digest)
    assert 200 <= resp.status < 300, resp.describe()


async def test_setup_populate_manifest0_by_tag(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """Setup: "Populate registry with test manifest" (manifests[0] under tag ``tagtest0``) ->
    2xx. The manifest carries unknown fields (``data``, ``newUnspecifiedField``) that the
    registry must store and serve untouched."""
    resp = await oci.put_manifest(data.test_tag, data.manifests[0].content, OCI_MANIFEST)
    assert 200 <= resp.status < 300, resp.describe()
    state["tag"] = data.test_tag


async def test_setup_populate_manifest1_by_digest(oci: OciHttp, data: SuiteData) -> None:
    """Setup: "Populate registry with test manifest" (manifests[1] PUT by digest) -> 2xx."""
    resp = await oci.put_manifest(data.manifests[1].digest, data.manifests[1].content, OCI_MANIFEST)
    assert 200 <= resp.status < 300, resp.describe()


# -- Pull blobs ------------------------------------------------------------------------------


async def test_head_nonexistent_blob_404(oci: OciHttp, data: SuiteData) -> None:
    """ "HEAD request to nonexistent blob should result in 404 response"."""
    resp = await oci.request("HEAD", f"/v2/<name>/blobs/{data.dummy_digest}")
    assert resp.status == 404, resp.describe()


async def test_head_existing_blob_200(oci: OciHttp, data: SuiteData) -> None:
    """ "HEAD request to existing blob should yield 200"; ``Docker-Content-Digest``, when sent,
    equals the blob's digest."""
    resp = await oci.request("HEAD", f"/v2/<name>/blobs/{data.configs[0].digest}")
    assert resp.status == 200, resp.describe()
    if resp.header("Docker-Content-Digest"):
        assert resp.header("Docker-Content-Digest") == data.configs[0].digest


async def test_get_nonexistent_blob_404(oci: OciHttp, data: SuiteData) -> None:
    """ "GET nonexistent blob should result in 404 response"."""
    resp = await oci.request("GET", f"/v2/<name>/blobs/{data.dummy_digest}")
    assert resp.status == 404, resp.describe()


async def test_get_existing_blob_200(oci: OciHttp, data: SuiteData) -> None:
    """ "GET request to existing blob URL should yield 200"."""
    resp = await oci.request("GET", f"/v2/<name>/blobs/{data.configs[0].digest}")
    assert resp.status == 200, resp.describe()


async def test_extra_blob_bytes_digest_and_range(oci: OciHttp, data: SuiteData) -> None:
    """Beyond the suite (spec "Pulling blobs", RFC 9110 ranges): GET returns the exact bytes with
    ``Docker-Content-Digest``; ``Range: bytes=0-9`` -> 206 with ``Content-Range: bytes
    0-9/<size>`` and those 10 bytes; a range starting past the end -> 416."""
    blob = data.configs[0]
    resp = await oci.request("GET", f"/v2/<name>/blobs/{blob.digest}")
    assert resp.status == 200 and resp.body == blob.content, resp.describe()
    assert resp.header("Docker-Content-Digest") == blob.digest
    part = await oci.request(
        "GET", f"/v2/<name>/blobs/{blob.digest}", headers={"Range": "bytes=0-9"}
    )
    assert part.status == 206, part.describe()
    assert part.body == blob.content[:10]
    assert part.header("Content-Range") == f"bytes 0-9/{len(blob.content)}"
    beyond = await oci.request(
        "GET",
        f"/v2/<name>/blobs/{blob.digest}",
        headers={"Range": f"bytes={len(blob.content) + 10}-{len(blob.content) + 20}"},
    )
    assert beyond.status == 416, beyond.describe()


# -- Pull manifests --------------------------------------------------------------------------


async def test_head_nonexistent_manifest_404(oci: OciHttp, data: SuiteData) -> None:
    """ "HEAD request to nonexistent manifest should return 404" (reference
    ``.INVALID_MANIFEST_NAME``, which is not even a valid tag: still 404, not 400)."""
    resp = await oci.request("HEAD", f"/v2/<name>/manifests/{data.nonexistent_manifest}")
    assert resp.status == 404, resp.describe()


@pytest.mark.parametrize("index", [0, 1])
async def test_head_manifest_by_digest_200(oci: OciHttp, data: SuiteData, index: int) -> None:
    """ "HEAD request to manifest[0] path (digest) should yield 200 response" and the same for
    manifest[1]; ``Docker-Content-Digest``, when sent, is the manifest's digest."""
    digest = data.manifests[index].digest
    resp = await oci.request("HEAD", f"/v2/<name>/manifests/{digest}", headers=ACCEPT_OCI)
    assert resp.status == 200, resp.describe()
    if resp.header("Docker-Content-Digest"):
        assert resp.header("Docker-Content-Digest") == digest


async def test_head_manifest_by_tag_200(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "HEAD request to manifest path (tag) should yield 200 response";
    ``Docker-Content-Digest``, when sent, is manifests[0]'s digest."""
    assert state.get("tag"), "setup did not tag manifests[0]"
    resp = await oci.request("HEAD", f"/v2/<name>/manifests/{state['tag']}", headers=ACCEPT_OCI)
    assert resp.status == 200, resp.describe()
    if resp.header("Docker-Content-Digest"):
        assert resp.header("Docker-Content-Digest") == data.manifests[0].digest


async def test_get_nonexistent_manifest_404(oci: OciHttp, data: SuiteData) -> None:
    """ "GET nonexistent manifest should return 404"."""
    resp = await oci.request("GET", f"/v2/<name>/manifests/{data.nonexistent_manifest}")
    assert resp.status == 404, resp.describe()


@pytest.mark.parametrize("index", [0, 1])
async def test_get_manifest_by_digest_200(oci: OciHttp, data: SuiteData, index: int) -> None:
    """ "GET request to manifest[0] path (digest) should yield 200 response" and the same for
    manifest[1]."""
    digest = data.manifests[index].digest
    resp = await oci.request("GET", f"/v2/<name>/manifests/{digest}", headers=ACCEPT_OCI)
    assert resp.status == 200, resp.describe()


async def test_get_manifest_by_tag_200(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "GET request to manifest path (tag) should yield 200 response"."""
    assert state.get("tag"), "setup did not tag manifests[0]"
    resp = await oci.request("GET", f"/v2/<name>/manifests/{state['tag']}", headers=ACCEPT_OCI)
    assert resp.status == 200, resp.describe()


async def test_extra_manifest_exact_bytes(oci: OciHttp, data: SuiteData) -> None:
    """Beyond the suite (spec "Pulling manifests": the registry serves what was pushed): GET by
    tag returns manifests[0]'s exact bytes, ``Content-Type`` its media type and
    ``Docker-Content-Digest`` its digest."""
    resp = await oci.request("GET", f"/v2/<name>/manifests/{data.test_tag}", headers=ACCEPT_OCI)
    assert resp.status == 200, resp.describe()
    assert resp.body == data.manifests[0].content
    assert resp.header("Content-Type") == OCI_MANIFEST
    assert resp.header("Docker-Content-Digest") == data.manifests[0].digest


# -- Error codes -----------------------------------------------------------------------------


@pytest.mark.reference_lacks(
    "distribution 2.8 answers 500 UNKNOWN (a storage path error) for /manifests/sha256:totallywrong"
)
async def test_400_body_is_oci_error_json(oci: OciHttp, data: SuiteData) -> None:
    """ "400 response body should contain OCI-conforming JSON message": GET
    ``/manifests/sha256:totallywrong`` (with a junk body) -> 400 or 404; on 400 the first error's
    ``code`` is one of the spec's error codes."""
    resp = await oci.request(
        "GET",
        "/v2/<name>/manifests/sha256:totallywrong",
        headers={"Content-Type": OCI_MANIFEST},
        body=data.invalid_manifest,
    )
    assert resp.status in (400, 404), resp.describe()
    if resp.status == 400:
        codes = resp.error_codes()
        assert codes, resp.describe()
        assert codes[0] in data.error_codes, resp.describe()


# -- Teardown --------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
async def test_teardown_delete_manifest(oci: OciHttp, data: SuiteData, index: int) -> None:
    """Teardown: "Delete manifest[0] created in setup" / "Delete manifest[1] created in setup"
    -> 2xx or 405 (deletes disabled)."""
    resp = await oci.request("DELETE", f"/v2/<name>/manifests/{data.manifests[index].digest}")
    assert _ok_or_405(resp.status), resp.describe()


@pytest.mark.parametrize("which", ["config0", "config1", "layer"])
async def test_teardown_delete_blob(oci: OciHttp, data: SuiteData, which: str) -> None:
    """Teardown: "Delete config[0] blob created in setup", "Delete config[1] blob created in
    setup", "Delete layer blob created in setup" -> 2xx, 404 or 405."""
    digest = {
        "config0": data.configs[0].digest,
        "config1": data.configs[1].digest,
        "layer": data.layer.digest,
    }[which]
    resp = await oci.request("DELETE", f"/v2/<name>/blobs/{digest}")
    assert _ok_or_405(resp.status) or resp.status == 404, resp.describe()
