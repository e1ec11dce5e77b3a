"""Conformance workflow 3: Content Discovery (``conformance/03_discovery_test.go``).

Setup pushes manifests[2] under ``test0``..``test3`` and the referrers graph: four artifact
manifests and one artifact index whose ``subject`` is manifests[4] (two pushed before their
subject exists, two after), and one artifact whose subject (manifests[3]) is never pushed. Then
tag listing with ``n``/``last``, the referrers API with and without ``artifactType`` filtering,
and teardown. ``state["tags"]`` is the suite's ``tagList``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Blob, OciHttp, Reply, SuiteData

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _tags(resp: Reply) -> list[str]:
    """The suite's ``getTagList``: the ``tags`` array, or ``[]`` when the body is not a list."""
    try:
        doc = resp.json()
    except ValueError:
        return []
    tags = doc.get("tags") if isinstance(doc, dict) else None
    return [str(t) for t in tags] if isinstance(tags, list) else []


def _index_manifests(resp: Reply) -> list[dict[str, Any]]:
    doc = resp.json()
    assert isinstance(doc, dict), resp.describe()
    manifests = doc.get("manifests") or []
    assert isinstance(manifests, list), resp.describe()
    return manifests


def _ok_405_or_404(status: int) -> bool:
    return 200 <= status < 300 or status in (404, 405)


# -- Setup -----------------------------------------------------------------------------------


async def test_setup_populate_config(oci: OciHttp, data: SuiteData) -> None:
    """Setup: "Populate registry with test blob" (configs[2]) -> 2xx."""
    resp = await oci.push_blob(data.configs[2].content, data.configs[2].digest)
    assert 200 <= resp.status < 300, resp.describe()


async def test_setup_populate_layer(oci: OciHttp, data: SuiteData) -> None:
    """Setup: "Populate registry with test layer" -> 2xx."""
    resp = await oci.push_blob(data.layer.content, data.layer.digest)
    assert 200 <= resp.status < 300, resp.describe()


async def test_setup_populate_tags(oci: OciHttp, data: SuiteData, state: dict[str, Any]) -> None:
    """Setup: "Populate registry with test tags": manifests[2] under ``test0``..``test3`` -> 2xx
    each; then the tag list is read."""
    for i in range(4):
        resp = await oci.put_manifest(f"test{i}", data.manifests[2].content, OCI_MANIFEST)
        assert 200 <= resp.status < 300, resp.describe()
    state["tags"] = _tags(await oci.request("GET", "/v2/<name>/tags/list"))


@pytest.mark.reference_lacks("no referrers support: no OCI-Subject header on manifest PUT")
async def test_setup_references(oci: OciHttp, data: SuiteData) -> None:
    """Setup: "References setup". Every push must be 2xx, and every PUT of a manifest with a
    ``subject`` must answer ``OCI-Subject: <subject digest>`` (spec "Pushing Manifests with
    Subject": the registry MUST accept a subject that does not exist yet and SHOULD... MUST set
    ``OCI-Subject`` when it processed the field). Order: the empty JSON blob (its digest is the
    well-known ``sha256:44136f...``), ref blob A, the A artifacts and the index (subject
    manifests[4] not pushed yet), configs[4], the layer, manifests[4] as ``tagtest0``, ref blob B,
    the B artifacts, and C whose subject manifests[3] is never pushed. All requests are sent;
    the failures are reported together."""
    assert data.empty_json.digest == data.empty_json_digest
    failures: list[str] = []

    async def blob(b: Blob) -> None:
        resp = await oci.push_blob(b.content, b.digest)
        if not 200 <= resp.status < 300:
            failures.append(resp.describe())

    async def manifest(
        reference: str, body: bytes, media_type: str, subject: str | None = None
    ) -> None:
        resp = await oci.put_manifest(reference, body, media_type)
        if not 200 <= resp.status < 300:
            failures.append(resp.describe())
        elif subject is not None and resp.header("OCI-Subject") != subject:
            failures.append(
                f"OCI-Subject {resp.header('OCI-Subject')!r} != {subject}: {resp.describe()}"
            )

    subject4 = data.manifests[4].digest
    await blob(data.empty_json)
    await blob(data.ref_blob_a)
    a_config, a_layer, index = data.refs_a_config, data.refs_a_layer, data.refs_index
    await manifest(a_config.digest, a_config.content, OCI_MANIFEST, subject4)
    await manifest(a_layer.digest, a_layer.content, OCI_MANIFEST, subject4)
    await manifest(index.digest, index.content, OCI_INDEX, subject4)
    await blob(data.configs[4])
    await blob(data.layer)
    await manifest(data.test_tag, data.manifests[4].content, OCI_MANIFEST)
    await blob(data.ref_blob_b)
    b_config, b_layer, c_layer = data.refs_b_config, data.refs_b_layer, data.refs_c_layer
    await manifest(b_config.digest, b_config.content, OCI_MANIFEST, subject4)
    await manifest(b_layer.digest, b_layer.content, OCI_MANIFEST, subject4)
    await manifest(c_layer.digest, c_layer.content, OCI_MANIFEST, data.manifests[3].digest)
    assert not failures, "\n".join(failures)


# -- Test content discovery endpoints (listing tags) -----------------------------------------


async def test_list_tags_200(oci: OciHttp, state: dict[str, Any]) -> None:
    """ "GET request to list tags should yield 200 response"."""
    resp = await oci.request("GET", "/v2/<name>/tags/list")
    assert resp.status == 200, resp.describe()
    state["tags"] = _tags(resp)
    state["num_tags"] = len(state["tags"])


@pytest.mark.reference_lacks("ignores n: the whole, unsorted tag list comes back")
async def test_list_tags_limited_by_n(oci: OciHttp, state: dict[str, Any]) -> None:
    """ "GET number of tags should be limitable by `n` query parameter": ``n = numTags/2`` ->
    200 with exactly that many tags."""
    n = state.get("num_tags", 0) // 2
    assert n > 0, "too few tags to paginate"
    resp = await oci.request("GET", "/v2/<name>/tags/list", n=str(n))
    assert resp.status == 200, resp.describe()
    state["tags"] = _tags(resp)
    assert len(state["tags"]) == n, resp.describe()


@pytest.mark.reference_lacks("ignores n/last: the whole tag list comes back")
async def test_list_tags_start_set_by_last(oci: OciHttp, state: dict[str, Any]) -> None:
    """ "GET start of tag is set by `last` query parameter": a first page of ``n``, then
    ``?n=..&last=<its last tag>`` -> 200. (The suite's remaining assertions are about the first
    page; ``test_extra_tags_pagination`` checks the second page itself.)"""
    n = state.get("num_tags", 0) // 2
    assert n > 0, "too few tags to paginate"
    first = _tags(await oci.request("GET", "/v2/<name>/tags/list", n=str(n)))
    assert len(first) >= n, first
    resp = await oci.request("GET", "/v2/<name>/tags/list", n=str(n), last=first[n - 1])
    assert resp.status == 200, resp.describe()
    assert len(first) <= n and first[n - 1] in first


@pytest.mark.reference_lacks("tag list pagination (n/last, Link) came with distribution 3")
async def test_extra_tags_pagination(oci: OciHttp, state: dict[str, Any]) -> None:
    """Beyond the suite (spec "Listing Tags"; issue: ``Link`` pagination): the full list is in
    lexical order; a page of ``n`` that is not the end carries ``Link: <...>; rel="next"``
    whose URL keeps ``n`` and names ``last``; following ``last`` pages walk the whole list,
    each page holding only tags after ``last``, with no ``Link`` on the final page."""
    everything = _tags(await oci.request("GET", "/v2/<name>/tags/list"))
    assert everything == sorted(everything) and len(everything) >= 3, everything
    seen: list[str] = []
    last: str | None = None
    for _ in range(len(everything) + 1):
        query = {"n": "2"} if last is None else {"n": "2", "last": last}
        resp = await oci.request("GET", "/v2/<name>/tags/list", **query)
        assert resp.status == 200, resp.describe()
        page = _tags(resp)
        assert all(last is None or t > last for t in page), (last, page)
        seen += page
        if len(seen) == len(everything):
            assert not resp.header("Link"), resp.describe()
            break
        link = resp.header("Link")
        assert link.startswith("<") and 'rel="next"' in link, resp.describe()
        assert "n=2" in link and f"last={page[-1]}" in link, link
        last = page[-1]
    assert seen == everything


# -- Test content discovery endpoints (listing references) -----------------------------------


def _check_index_reply(resp: Reply) -> list[dict[str, Any]]:
    assert resp.status == 200, resp.describe()
    assert resp.header("Content-Type") == OCI_INDEX, resp.describe()
    return _index_manifests(resp)


def _check_annotations(data: SuiteData, manifests: list[dict[str, Any]]) -> None:
    for desc in manifests:
        annotations = desc.get("annotations") or {}
        assert len(annotations) == 1, desc
        assert annotations.get(data.annotation_key) == data.annotations.get(desc["digest"]), desc


@pytest.mark.reference_lacks("no referrers API (404)")
async def test_referrers_of_unknown_digest_empty_200(oci: OciHttp, data: SuiteData) -> None:
    """ "GET request to nonexistent blob should result in empty 200 response": referrers of a
    digest nothing refers to -> 200, ``Content-Type: application/vnd.oci.image.index.v1+json``,
    an index with no manifests."""
    resp = await oci.request("GET", f"/v2/<name>/referrers/{data.dummy_digest}")
    assert _check_index_reply(resp) == []


@pytest.mark.reference_lacks("no referrers API (404)")
async def test_referrers_of_subject_200(oci: OciHttp, data: SuiteData) -> None:
    """ "GET request to existing blob should yield 200": referrers of manifests[4] -> the index
    lists all 5 artifacts (distinct digests), each descriptor carrying exactly the artifact's one
    annotation."""
    resp = await oci.request("GET", f"/v2/<name>/referrers/{data.manifests[4].digest}")
    manifests = _check_index_reply(resp)
    assert len(manifests) == 5, resp.describe()
    assert manifests[0]["digest"] != manifests[1]["digest"]
    _check_annotations(data, manifests)


@pytest.mark.reference_lacks("no referrers API (404)")
async def test_referrers_filtered_by_artifact_type(oci: OciHttp, data: SuiteData) -> None:
    """ "GET request to existing blob with filter should yield 200": ``?artifactType=<A>`` -> if
    ``OCI-Filters-Applied`` is sent it equals ``artifactType`` and exactly the 2 type-A
    artifacts are listed; otherwise all 5 (the filter is a SHOULD)."""
    resp = await oci.request(
        "GET",
        f"/v2/<name>/referrers/{data.manifests[4].digest}",
        artifactType=data.artifact_type_a,
    )
    manifests = _check_index_reply(resp)
    if resp.header("OCI-Filters-Applied"):
        assert len(manifests) == 2, resp.describe()
        assert resp.header("OCI-Filters-Applied") == "artifactType"
    else:
        assert len(manifests) == 5, resp.describe()
    _check_annotations(data, manifests)


@pytest.mark.reference_lacks("no referrers API (404)")
async def test_referrers_of_missing_manifest_200(oci: OciHttp, data: SuiteData) -> None:
    """ "GET request to missing manifest should yield 200": referrers of manifests[3] (never
    pushed) -> exactly artifact C."""
    resp = await oci.request("GET", f"/v2/<name>/referrers/{data.manifests[3].digest}")
    manifests = _check_index_reply(resp)
    assert len(manifests) == 1, resp.describe()
    assert manifests[0]["digest"] == data.refs_c_layer.digest


@pytest.mark.reference_lacks("no referrers API (404)")
async def test_extra_referrer_descriptors(oci: OciHttp, data: SuiteData) -> None:
    """Beyond the suite (spec "Listing Referrers"): each descriptor has the artifact's
    ``mediaType`` and ``size``, and ``artifactType`` is the manifest's ``artifactType`` or, when
    that is absent, its ``config.mediaType``; the filtered list holds type A only."""
    resp = await oci.request("GET", f"/v2/<name>/referrers/{data.manifests[4].digest}")
    by_digest = {d["digest"]: d for d in _check_index_reply(resp)}
    expected = {
        data.refs_a_config.digest: (OCI_MANIFEST, data.refs_a_config, data.artifact_type_a),
        data.refs_a_layer.digest: (OCI_MANIFEST, data.refs_a_layer, data.artifact_type_a),
        data.refs_b_config.digest: (OCI_MANIFEST, data.refs_b_config, data.artifact_type_b),
        data.refs_b_layer.digest: (OCI_MANIFEST, data.refs_b_layer, data.artifact_type_b),
        data.refs_index.digest: (OCI_INDEX, data.refs_index, data.artifact_type_index),
    }
    assert set(by_digest) == set(expected)
    for digest, (media_type, blob, artifact_type) in expected.items():
        desc = by_digest[digest]
        assert desc.get("mediaType") == media_type, desc
        assert desc.get("size") == len(blob.content), desc
        assert desc.get("artifactType") == artifact_type, desc
    filtered = await oci.request(
        "GET",
        f"/v2/<name>/referrers/{data.manifests[4].digest}",
        artifactType=data.artifact_type_a,
    )
    kinds = {d.get("artifactType") for d in _check_index_reply(filtered)}
    assert kinds == {data.artifact_type_a}, filtered.describe()


# -- Teardown --------------------------------------------------------------------------------


@pytest.mark.reference_lacks("DELETE /manifests/<tag> -> 400 DIGEST_INVALID (tag deletion is v1.1)")
async def test_teardown_delete_manifests_and_tags(oci: OciHttp, data: SuiteData) -> None:
    """Teardown: "Delete created manifest & associated tags": the index, manifests[2],
    manifests[4], the A artifacts, tag ``tagtest0``, the B artifacts and C -> 2xx, 405 or 404
    each."""
    references = [
        data.refs_index.digest,
        data.manifests[2].digest,
        data.manifests[4].digest,
        data.refs_a_config.digest,
        data.refs_a_layer.digest,
        data.test_tag,
        data.refs_b_config.digest,
        data.refs_b_layer.digest,
        data.refs_c_layer.digest,
    ]
    for ref in references:
        resp = await oci.request("DELETE", f"/v2/<name>/manifests/{ref}")
        assert _ok_405_or_404(resp.status), resp.describe()


@pytest.mark.parametrize("which", ["config", "layer"])
async def test_teardown_delete_blob(oci: OciHttp, data: SuiteData, which: str) -> None:
    """Teardown: "Delete config blob created in tests" (configs[2]) / "Delete layer blob
    created in setup" -> 2xx or 405 (404 is *not* accepted here: both were pushed)."""
    digest = data.configs[2].digest if which == "config" else data.layer.digest
    resp = await oci.request("DELETE", f"/v2/<name>/blobs/{digest}")
    assert 200 <= resp.status < 300 or resp.status == 405, resp.describe()


async def test_teardown_references(oci: OciHttp, data: SuiteData) -> None:
    """Teardown: "References teardown": the artifacts and manifests[4] again (already gone:
    404 is fine), then configs[4], ref blobs A and B and the empty JSON blob -> 2xx, 405 or
    404 each."""
    manifests = [
        data.refs_index.digest,
        data.refs_a_config.digest,
        data.refs_a_layer.digest,
        data.manifests[4].digest,
        data.refs_b_config.digest,
        data.refs_b_layer.digest,
    ]
    for ref in manifests:
        resp = await oci.request("DELETE", f"/v2/<name>/manifests/{ref}")
        assert _ok_405_or_404(resp.status), resp.describe()
    for blob in (data.configs[4], data.ref_blob_a, data.ref_blob_b, data.empty_json):
        resp = await oci.request("DELETE", f"/v2/<name>/blobs/{blob.digest}")
        assert _ok_405_or_404(resp.status), resp.describe()
