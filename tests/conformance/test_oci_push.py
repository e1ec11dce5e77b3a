"""Conformance workflow 2: Push (``conformance/02_push_test.go``, "Push" context).

Streamed (POST + PATCH + PUT), monolithic (POST ``?digest=`` with the body, and POST + PUT),
chunked (``Content-Range`` order, 416 on a repeated or out-of-order chunk, upload status GET),
cross-repository mount, manifest upload (four tags, a manifest without layers) and teardown, in
the suite's order. ``state["last"]``/``state["prev"]`` are the suite's ``lastResponse`` and
``prevResponse``.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import OciHttp, Reply, SuiteData

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCTET = "application/octet-stream"


def _ok_or_405(status: int) -> bool:
    return 200 <= status < 300 or status == 405


def _last(state: dict[str, Any], key: str = "last") -> Reply:
    reply: Reply | None = state.get(key)
    assert reply is not None, f"an earlier step did not record {key!r}"
    return reply


# -- Blob Upload Streamed --------------------------------------------------------------------


async def test_streamed_patch_with_blob_202(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "PATCH request with blob in body should yield 202 response": POST opens a session with a
    ``Location``; PATCH of the whole of blob A (no ``Content-Range``) to it -> 202."""
    start = await oci.request("POST", "/v2/<name>/blobs/uploads/")
    assert start.header("Location"), start.describe()
    resp = await oci.request(
        "PATCH",
        start.relative_location(),
        headers={"Content-Type": OCTET},
        body=data.blob_a.content,
    )
    assert resp.status == 202, resp.describe()
    state["last"] = resp


async def test_streamed_put_with_digest_201(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "PUT request to session URL with digest should yield 201 response": PUT (no body) to the
    PATCH's ``Location`` with ``?digest=`` -> 201 with a ``Location``."""
    resp = await oci.request(
        "PUT",
        _last(state).relative_location(),
        headers={"Content-Type": OCTET},
        digest=data.blob_a.digest,
    )
    assert resp.status == 201, resp.describe()
    assert resp.header("Location"), resp.describe()


# -- Blob Upload Monolithic ------------------------------------------------------------------


async def test_monolithic_get_nonexistent_blob_404(oci: OciHttp, data: SuiteData) -> None:
    """ "GET nonexistent blob should result in 404 response"."""
    resp = await oci.request("GET", f"/v2/<name>/blobs/{data.dummy_digest}")
    assert resp.status == 404, resp.describe()


async def test_monolithic_post_with_digest_201_or_202(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "POST request with digest and blob should yield a 201 or 202": single POST carrying
    ``?digest=`` and configs[1] as body -> 201 (stored) or 202 (a session; body ignored), with a
    ``Location`` either way."""
    resp = await oci.request(
        "POST",
        "/v2/<name>/blobs/uploads/",
        headers={"Content-Type": OCTET},
        body=data.configs[1].content,
        digest=data.configs[1].digest,
    )
    assert resp.header("Location"), resp.describe()
    assert resp.status in (201, 202), resp.describe()
    state["last"] = resp


async def test_monolithic_get_blob_after_post(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "GET request to blob URL from prior request should yield 200 or 404 based on response
    code": 200 when the POST answered 201, 404 when it answered 202."""
    resp = await oci.request("GET", f"/v2/<name>/blobs/{data.configs[1].digest}")
    expected = 404 if _last(state).status == 202 else 200
    assert resp.status == expected, resp.describe()


async def test_monolithic_post_yields_session(oci: OciHttp, state: dict[str, Any]) -> None:
    """ "POST request should yield a session ID": bare POST -> 202."""
    resp = await oci.request("POST", "/v2/<name>/blobs/uploads/")
    assert resp.status == 202, resp.describe()
    state["last"] = resp


async def test_monolithic_put_blob_201(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "PUT upload of a blob should yield a 201 Response": PUT configs[1] with ``?digest=`` to
    the session -> 201 with a ``Location``."""
    resp = await oci.request(
        "PUT",
        _last(state).relative_location(),
        headers={"Content-Type": OCTET},
        body=data.configs[1].content,
        digest=data.configs[1].digest,
    )
    assert resp.header("Location"), resp.describe()
    assert resp.status == 201, resp.describe()


async def test_monolithic_get_existing_blob_200(oci: OciHttp, data: SuiteData) -> None:
    """ "GET request to existing blob should yield 200 response"."""
    resp = await oci.request("GET", f"/v2/<name>/blobs/{data.configs[1].digest}")
    assert resp.status == 200, resp.describe()


async def test_monolithic_put_layer_201(oci: OciHttp, data: SuiteData) -> None:
    """ "PUT upload of a layer blob should yield a 201 Response" (POST + PUT) with a
    ``Location``."""
    resp = await oci.push_blob(data.layer.content, data.layer.digest)
    assert resp.header("Location"), resp.describe()
    assert resp.status == 201, resp.describe()


async def test_monolithic_get_existing_layer_200(oci: OciHttp, data: SuiteData) -> None:
    """ "GET request to existing layer should yield 200 response"."""
    resp = await oci.request("GET", f"/v2/<name>/blobs/{data.layer.digest}")
    assert resp.status == 200, resp.describe()


# -- Blob Upload Chunked ---------------------------------------------------------------------


@pytest.mark.reference_lacks(
    "distribution 2.8 ignores Content-Range on PATCH: chunk 2 is appended at 0 -> 202"
)
async def test_chunked_out_of_order_416(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "Out-of-order blob upload should return 416": POST (``Content-Length: 0``) -> a
    ``Location``; PATCH of the *second* chunk first (``Content-Range: 22-41``) -> 416. If the
    registry announces ``OCI-Chunk-Min-Length`` above chunk 1's size, the blob is rebuilt at
    ``2*min - 2`` bytes first, as the suite does."""
    start = await oci.request("POST", "/v2/<name>/blobs/uploads/", headers={"Content-Length": "0"})
    assert start.header("Location"), start.describe()
    chunked = data.chunked
    min_len = start.header("OCI-Chunk-Min-Length")
    if min_len and int(min_len) > len(chunked.chunk1):
        chunked = data.chunked_of(int(min_len) * 2 - 2)
    state["chunked"] = chunked
    resp = await oci.request(
        "PATCH",
        start.relative_location(),
        headers={"Content-Type": OCTET, "Content-Range": chunked.range2},
        body=chunked.chunk2,
    )
    assert resp.status == 416, resp.describe()


async def test_chunked_first_chunk_202(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "PATCH request with first chunk should return 202": new session, PATCH chunk 1 with
    ``Content-Range: 0-21`` -> 202 and ``Range: 0-21``."""
    chunked = state.get("chunked", data.chunked)
    start = await oci.request("POST", "/v2/<name>/blobs/uploads/", headers={"Content-Length": "0"})
    assert start.header("Location"), start.describe()
    state["prev"] = start
    resp = await oci.request(
        "PATCH",
        start.relative_location(),
        headers={"Content-Type": OCTET, "Content-Range": chunked.range1},
        body=chunked.chunk1,
    )
    assert resp.status == 202, resp.describe()
    assert resp.header("Range") == chunked.range1, resp.describe()
    state["last"] = resp


@pytest.mark.reference_lacks(
    "distribution 2.8 rejects a stale _state token: 404 BLOB_UPLOAD_INVALID, not 416"
)
async def test_chunked_retry_previous_chunk_416(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "Retry previous blob chunk should return 416": the same chunk 1 (``0-21``) again, sent to
    the POST's ``Location`` -> 416 (the session already holds those bytes)."""
    chunked = state.get("chunked", data.chunked)
    resp = await oci.request(
        "PATCH",
        _last(state, "prev").relative_location(),
        headers={"Content-Type": OCTET, "Content-Range": chunked.range1},
        body=chunked.chunk1,
    )
    assert resp.status == 416, resp.describe()


@pytest.mark.reference_lacks(
    "distribution 2.8 rejects a stale _state token: 404 BLOB_UPLOAD_INVALID, not 204"
)
async def test_chunked_status_of_stale_session_204(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "Get on stale blob upload should return 204 with a range and location": GET the POST's
    (stale) ``Location`` -> 204, a ``Location``, ``Range: 0-21``."""
    chunked = state.get("chunked", data.chunked)
    resp = await oci.request("GET", _last(state, "prev").relative_location())
    assert resp.status == 204, resp.describe()
    assert resp.header("Location"), resp.describe()
    assert resp.header("Range") == chunked.range1, resp.describe()
    state["last"] = resp


async def test_chunked_second_chunk_202(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "PATCH request with second chunk should return 202": chunk 2 (``22-41``) to the status
    GET's ``Location`` -> 202 with a ``Location``."""
    chunked = state.get("chunked", data.chunked)
    resp = await oci.request(
        "PATCH",
        _last(state).relative_location(),
        headers={"Content-Type": OCTET, "Content-Range": chunked.range2},
        body=chunked.chunk2,
    )
    assert resp.status == 202, resp.describe()
    assert resp.header("Location"), resp.describe()
    state["last"] = resp


async def test_chunked_put_with_digest_201(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "PUT request with digest should return 201": empty PUT with ``?digest=`` of the whole
    blob -> 201 with a ``Location``."""
    chunked = state.get("chunked", data.chunked)
    resp = await oci.request(
        "PUT",
        _last(state).relative_location(),
        headers={"Content-Type": OCTET},
        digest=chunked.blob.digest,
    )
    assert resp.status == 201, resp.describe()
    assert resp.header("Location"), resp.describe()


async def test_extra_chunked_blob_bytes(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """Beyond the suite: the blob assembled from the two chunks is served byte for byte."""
    chunked = state.get("chunked", data.chunked)
    resp = await oci.request("GET", f"/v2/<name>/blobs/{chunked.blob.digest}")
    assert resp.status == 200 and resp.body == chunked.blob.content, resp.describe()


@pytest.mark.reference_lacks(
    "distribution 2.8 ignores Content-Range on the closing PUT: appended -> 400 DIGEST_INVALID"
)
async def test_extra_out_of_order_final_chunk_on_put_416(oci: OciHttp, data: SuiteData) -> None:
    """Beyond this port (the suite's newer ``OutOfOrderChunks`` + ``PutLastChunk`` run): "If
    the final chunk is uploaded out of order, the registry MUST respond with a 416". Chunk 1
    by PATCH -> 202; a closing ``PUT ?digest=`` carrying chunk 1 again (``0-…``) -> 416 with
    a ``Location``; GET -> 204 with the unchanged ``Range``; the closing PUT with chunk 2 at
    the right offset -> 201, and the blob is served byte for byte."""
    chunked = data.chunked_of(60)  # a blob of its own: not pushed by any other step
    start = await oci.request("POST", "/v2/<name>/blobs/uploads/", headers={"Content-Length": "0"})
    assert start.header("Location"), start.describe()
    first = await oci.request(
        "PATCH",
        start.relative_location(),
        headers={"Content-Type": OCTET, "Content-Range": chunked.range1},
        body=chunked.chunk1,
    )
    assert first.status == 202, first.describe()
    bad = await oci.request(
        "PUT",
        first.relative_location(),
        headers={"Content-Type": OCTET, "Content-Range": chunked.range1},
        body=chunked.chunk1,
        digest=chunked.blob.digest,
    )
    assert bad.status == 416, bad.describe()
    assert bad.header("Location"), bad.describe()
    status = await oci.request("GET", bad.relative_location())
    assert status.status == 204 and status.header("Range") == chunked.range1, status.describe()
    done = await oci.request(
        "PUT",
        status.relative_location(),
        headers={"Content-Type": OCTET, "Content-Range": chunked.range2},
        body=chunked.chunk2,
        digest=chunked.blob.digest,
    )
    assert done.status == 201, done.describe()
    got = await oci.request("GET", f"/v2/<name>/blobs/{chunked.blob.digest}")
    assert got.status == 200 and got.body == chunked.blob.content, got.describe()


# -- Cross-Repository Blob Mount -------------------------------------------------------------


async def test_mount_without_from_yields_session(oci: OciHttp, data: SuiteData) -> None:
    """ "Cross-mounting of a blob without the from argument should yield session id": POST to
    the cross-mount repository with ``?mount=<unknown digest>`` and no ``from`` -> 202 with a
    ``Location``."""
    resp = await oci.request(
        "POST",
        "/v2/<name>/blobs/uploads/",
        name=oci.target.crossmount_name,
        mount=data.dummy_digest,
    )
    assert resp.status == 202, resp.describe()
    assert resp.header("Location"), resp.describe()


async def test_mount_from_other_repository(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "POST request to mount another repository's blob should return 201 or 202": ``?mount=``
    blob A ``&from=<name>``."""
    resp = await oci.request(
        "POST",
        "/v2/<name>/blobs/uploads/",
        name=oci.target.crossmount_name,
        mount=data.blob_a.digest,
        **{"from": oci.target.name},
    )
    assert resp.status in (201, 202), resp.describe()
    state["last"] = resp


async def test_mount_get_blob_in_crossmount_namespace_200(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "GET request to test digest within cross-mount namespace should return 200" (only when
    the mount answered 201): its ``Location`` is exactly ``/v2/<crossmount>/blobs/<digest>``
    and GET on it -> 200."""
    last = _last(state)
    if last.status != 201:
        pytest.skip("the mount answered 202 (RunOnlyIf status == 201)")
    expected = f"/v2/{oci.target.crossmount_name}/blobs/{data.blob_a.digest}"
    assert last.relative_location() == expected, last.describe()
    resp = await oci.request("GET", last.relative_location())
    assert resp.status == 200, resp.describe()


async def test_mount_of_nonexistent_blob_yields_session(
    oci: OciHttp, state: dict[str, Any]
) -> None:
    """ "Cross-mounting of nonexistent blob should yield session id" (only when the mount
    answered 202): its ``Location`` starts with ``/v2/<crossmount>/blobs/uploads/``."""
    last = _last(state)
    if last.status != 202:
        pytest.skip("the mount answered 201 (RunOnlyIf status == 202)")
    prefix = f"/v2/{oci.target.crossmount_name}/blobs/uploads/"
    assert last.relative_location().startswith(prefix), last.describe()


async def test_mount_without_from_automatic_discovery(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "Cross-mounting without from, and automatic content discovery enabled should return a
    201" / "... disabled should return a 202" (the suite runs one of them when
    ``OCI_AUTOMATIC_CROSSMOUNT`` says which; we accept either and check it is coherent): once
    the blob is in the cross-mount repository, ``?mount=`` without ``from`` -> 201, or 202 with
    an upload ``Location``."""
    if _last(state).status != 201:
        pytest.skip("the mount answered 202 (RunOnlyIf status == 201)")
    resp = await oci.request(
        "POST",
        "/v2/<name>/blobs/uploads/",
        name=oci.target.crossmount_name,
        mount=data.blob_a.digest,
    )
    assert resp.status in (201, 202), resp.describe()
    if resp.status == 202:
        prefix = f"/v2/{oci.target.crossmount_name}/blobs/uploads/"
        assert resp.relative_location().startswith(prefix), resp.describe()


# -- Manifest Upload -------------------------------------------------------------------------


async def test_manifest_get_nonexistent_404(oci: OciHttp, data: SuiteData) -> None:
    """ "GET nonexistent manifest should return 404"."""
    resp = await oci.request("GET", f"/v2/<name>/manifests/{data.nonexistent_manifest}")
    assert resp.status == 404, resp.describe()


async def test_manifest_put_accepted(oci: OciHttp, data: SuiteData) -> None:
    """ "PUT should accept a manifest upload": manifests[1] under tags ``test0``..``test3`` ->
    201 with a ``Location`` each time."""
    for i in range(4):
        resp = await oci.put_manifest(f"test{i}", data.manifests[1].content, OCI_MANIFEST)
        assert resp.header("Location"), resp.describe()
        assert resp.status == 201, resp.describe()


async def test_manifest_with_no_layers_accepted(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """ "Registry should accept a manifest upload with no layers" (``layers: []``, no
    ``mediaType`` field) -> 201 with a ``Location``. The suite only warns when refused; we
    require it (the origin stores any valid OCI manifest)."""
    resp = await oci.put_manifest(
        data.empty_layer_tag, data.empty_layer_manifest.content, OCI_MANIFEST
    )
    assert resp.status == 201, resp.describe()
    assert resp.header("Location"), resp.describe()
    state["empty_layer_ref"] = resp.header("Location")


async def test_manifest_get_by_digest_200(oci: OciHttp, data: SuiteData) -> None:
    """ "GET request to manifest URL (digest) should yield 200 response"."""
    resp = await oci.request(
        "GET", f"/v2/<name>/manifests/{data.manifests[1].digest}", headers={"Accept": OCI_MANIFEST}
    )
    assert resp.status == 200, resp.describe()


# -- Tags set in the manifest PUT (the spec's draft ``?tag=``, the newer suite's TagParam) -----

TAG_PARAM_NAME = "conformance/tagparam"  # its own repository: the shared one's tags stay as is


def _tag_values(resp: Reply) -> list[str]:
    """The tags an ``OCI-Tag`` answer names (several headers and/or comma lists, RFC 9110)."""
    return [t.strip() for v in resp.headers.getall("OCI-Tag", []) for t in v.split(",")]


async def _push_blob_to(oci: OciHttp, name: str, content: bytes, digest: str) -> None:
    start = await oci.request("POST", "/v2/<name>/blobs/uploads/", name=name)
    assert start.header("Location"), start.describe()
    done = await oci.request(
        "PUT",
        start.relative_location(),
        headers={"Content-Type": OCTET},
        body=content,
        digest=digest,
    )
    assert done.status == 201, done.describe()


async def _put_with_tags(
    oci: OciHttp, digest: str, body: bytes, tags: list[str]
) -> tuple[Reply, dict[str, Reply]]:
    """PUT ``body`` by ``digest`` with ``?tag=`` each of ``tags``; then GET every tag."""
    query = "&".join(f"tag={t}" for t in tags)
    put = await oci.request(
        "PUT",
        f"/v2/<name>/manifests/{digest}?{query}",
        name=TAG_PARAM_NAME,
        headers={"Content-Type": OCI_MANIFEST},
        body=body,
    )
    got = {
        t: await oci.request(
            "GET",
            f"/v2/<name>/manifests/{t}",
            name=TAG_PARAM_NAME,
            headers={"Accept": OCI_MANIFEST},
        )
        for t in tags
    }
    return put, got


@pytest.mark.reference_lacks("distribution 2.8 ignores ?tag= on a manifest PUT (no OCI-Tag)")
async def test_extra_manifest_put_by_digest_with_tag_params(oci: OciHttp, data: SuiteData) -> None:
    """The newer suite's "tag-param-sha256" data: "When pushing a manifest by digest, the
    registry MAY support the pushing of tags specified by addition of tag query parameters
    ... MUST include an OCI-Tag response header ... for each accepted tag": PUT by digest
    with three ``?tag=`` -> 201, each tag in ``OCI-Tag``, each tag pulls the manifest with
    its ``Docker-Content-Digest``."""
    await _push_blob_to(oci, TAG_PARAM_NAME, data.configs[1].content, data.configs[1].digest)
    await _push_blob_to(oci, TAG_PARAM_NAME, data.layer.content, data.layer.digest)
    manifest = data.manifests[1]
    tags = ["tag-param-0", "tag-param-1", "latest"]
    put, got = await _put_with_tags(oci, manifest.digest, manifest.content, tags)
    assert put.status == 201, put.describe()
    assert put.header("Docker-Content-Digest") == manifest.digest, put.describe()
    assert _tag_values(put) == tags, put.describe()
    for reply in got.values():
        assert reply.status == 200 and reply.body == manifest.content, reply.describe()
        assert reply.header("Docker-Content-Digest") == manifest.digest, reply.describe()


@pytest.mark.reference_lacks("distribution 2.8 ignores ?tag= on a manifest PUT (no OCI-Tag)")
async def test_extra_sha512_manifest_with_tag_params(oci: OciHttp, data: SuiteData) -> None:
    """The newer suite's "tag-param-sha512" data ("non-canonical digests require tag
    parameters to push tags"): config and layer pushed under sha512 digests, a manifest naming
    them PUT by its sha512 digest with ``?tag=`` -> 201 with that sha512 in
    ``Docker-Content-Digest``; GET and HEAD by tag answer the same sha512 digest."""
    config, layer = data.configs[2].content, data.layer.content
    config_digest, layer_digest = _sha512(config), _sha512(layer)
    await _push_blob_to(oci, TAG_PARAM_NAME, config, config_digest)
    await _push_blob_to(oci, TAG_PARAM_NAME, layer, layer_digest)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        },
        indent="\t",
    ).encode()
    digest = _sha512(body)
    tags = ["tag-param-sha512-0", "tag-param-sha512-1"]
    put, got = await _put_with_tags(oci, digest, body, tags)
    assert put.status == 201, put.describe()
    assert put.header("Docker-Content-Digest") == digest, put.describe()
    assert _tag_values(put) == tags, put.describe()
    for tag, reply in got.items():
        assert reply.status == 200 and reply.body == body, reply.describe()
        assert reply.header("Docker-Content-Digest") == digest, reply.describe()
        head = await oci.request(
            "HEAD",
            f"/v2/<name>/manifests/{tag}",
            name=TAG_PARAM_NAME,
            headers={"Accept": OCI_MANIFEST},
        )
        assert head.status == 200, head.describe()
        assert head.header("Docker-Content-Digest") == digest, head.describe()


def _sha512(content: bytes) -> str:
    return "sha512:" + hashlib.sha512(content).hexdigest()


# -- Teardown --------------------------------------------------------------------------------


async def test_teardown_delete_manifests(
    oci: OciHttp, data: SuiteData, state: dict[str, Any]
) -> None:
    """Teardown: "Delete manifest created in tests": manifests[1] by digest, and the no-layers
    manifest when it was accepted -> 2xx or 405."""
    resp = await oci.request("DELETE", f"/v2/<name>/manifests/{data.manifests[1].digest}")
    assert _ok_or_405(resp.status), resp.describe()
    if state.get("empty_layer_ref"):
        digest = data.empty_layer_manifest.digest
        resp = await oci.request("DELETE", f"/v2/<name>/manifests/{digest}")
        assert _ok_or_405(resp.status), resp.describe()


@pytest.mark.parametrize("which", ["config", "layer"])
async def test_teardown_delete_blob(oci: OciHttp, data: SuiteData, which: str) -> None:
    """Teardown: "Delete config blob created in tests" / "Delete layer blob created in setup"
    -> 2xx, 404 or 405."""
    digest = data.configs[1].digest if which == "config" else data.layer.digest
    resp = await oci.request("DELETE", f"/v2/<name>/blobs/{digest}")
    assert _ok_or_405(resp.status) or resp.status == 404, resp.describe()
