"""Manifest parsing and validation (regcore/manifest.py) and Accept negotiation (mediatypes)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from regcore import errors
from regcore import mediatypes as mt
from regcore.digest import Digest
from regcore.manifest import (
    MAX_MANIFEST_BYTES,
    ManifestTooLarge,
    ParsedManifest,
    parse_manifest,
    referrer_descriptor,
)

CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER1 = b"layer-one-bytes"
LAYER2 = b"layer-two-bytes"


def desc(data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
        **extra,
    }


def dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=3).encode()


def oci_manifest(**extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": desc(CONFIG, mt.OCI_CONFIG),
        "layers": [desc(LAYER1, mt.OCI_LAYER_GZIP), desc(LAYER2, mt.OCI_LAYER_ZSTD)],
        **extra,
    }


def docker_manifest(**extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": desc(CONFIG, mt.DOCKER_CONFIG),
        "layers": [desc(LAYER1, mt.DOCKER_LAYER)],
        **extra,
    }


def index_of(media_type: str, child_type: str, **extra: Any) -> dict[str, Any]:
    amd = dumps(oci_manifest())
    arm = dumps(oci_manifest(annotations={"arch": "arm64"}))
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            desc(amd, child_type, platform={"architecture": "amd64", "os": "linux"}),
            desc(
                arm, child_type, platform={"architecture": "arm64", "os": "linux", "variant": "v8"}
            ),
        ],
        **extra,
    }


def invalid(body: bytes, content_type: str | None) -> errors.RegistryError:
    with pytest.raises(errors.ManifestInvalid) as info:
        parse_manifest(body, content_type)
    assert info.value.code == "MANIFEST_INVALID"
    return info.value


# --- valid documents --------------------------------------------------------------------


def test_oci_image_manifest() -> None:
    body = dumps(oci_manifest(annotations={"org.opencontainers.image.title": "x"}))
    parsed = parse_manifest(body, mt.OCI_MANIFEST)
    assert parsed.media_type == mt.OCI_MANIFEST
    assert parsed.raw is body
    assert parsed.size == len(body)
    assert str(parsed.digest) == "sha256:" + hashlib.sha256(body).hexdigest()
    assert not parsed.is_index
    assert [str(d.digest) for d in parsed.blobs] == [
        desc(CONFIG, "x")["digest"],
        desc(LAYER1, "x")["digest"],
        desc(LAYER2, "x")["digest"],
    ]
    assert parsed.config is not None and parsed.config.size == len(CONFIG)
    assert [d.media_type for d in parsed.layers] == [mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD]
    assert parsed.children == ()
    assert parsed.subject is None
    assert parsed.artifact_type == mt.OCI_CONFIG  # falls back to config.mediaType
    assert parsed.annotations == {"org.opencontainers.image.title": "x"}


def test_digest_is_of_exact_bytes_not_reserialised_json() -> None:
    doc = oci_manifest()
    compact = json.dumps(doc, separators=(",", ":")).encode()
    pretty = dumps(doc)
    a, b = parse_manifest(compact, mt.OCI_MANIFEST), parse_manifest(pretty, mt.OCI_MANIFEST)
    assert a.digest != b.digest
    assert a.digest == Digest.of(compact)
    assert b.raw == pretty


def test_digest_algorithm_sha512() -> None:
    body = dumps(oci_manifest())
    parsed = parse_manifest(body, mt.OCI_MANIFEST, digest_algorithm="sha512")
    assert str(parsed.digest) == "sha512:" + hashlib.sha512(body).hexdigest()


def test_content_type_parameters_are_ignored() -> None:
    parsed = parse_manifest(dumps(oci_manifest()), mt.OCI_MANIFEST + "; charset=utf-8")
    assert parsed.media_type == mt.OCI_MANIFEST


def test_empty_layers_allowed() -> None:
    parsed = parse_manifest(dumps(oci_manifest(layers=[])), mt.OCI_MANIFEST)
    assert len(parsed.blobs) == 1


def test_oci_index() -> None:
    doc = index_of(mt.OCI_INDEX, mt.OCI_MANIFEST, annotations={"a": "b"})
    parsed = parse_manifest(dumps(doc), mt.OCI_INDEX)
    assert parsed.is_index
    assert parsed.media_type == mt.OCI_INDEX
    assert parsed.blobs == ()
    assert parsed.config is None
    assert [str(c.digest) for c in parsed.children] == [m["digest"] for m in doc["manifests"]]
    assert parsed.platforms == (
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    )
    assert parsed.artifact_type is None  # an index has no config to fall back to
    assert parsed.annotations == {"a": "b"}


def test_docker_schema2_manifest() -> None:
    parsed = parse_manifest(dumps(docker_manifest()), mt.DOCKER_MANIFEST)
    assert parsed.media_type == mt.DOCKER_MANIFEST
    assert [d.media_type for d in parsed.blobs] == [mt.DOCKER_CONFIG, mt.DOCKER_LAYER]
    assert parsed.artifact_type == mt.DOCKER_CONFIG


def test_docker_manifest_list() -> None:
    doc = index_of(mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST)
    parsed = parse_manifest(dumps(doc), mt.DOCKER_MANIFEST_LIST)
    assert parsed.is_index
    assert len(parsed.children) == 2
    assert parsed.children[1].platform == {"architecture": "arm64", "os": "linux", "variant": "v8"}


def test_docker_foreign_layer_is_not_a_required_blob() -> None:
    foreign = desc(b"windows-base", mt.DOCKER_FOREIGN_LAYER, urls=["https://mcr.example/layer"])
    doc = docker_manifest(layers=[foreign, desc(LAYER1, mt.DOCKER_LAYER)])
    parsed = parse_manifest(dumps(doc), mt.DOCKER_MANIFEST)
    assert len(parsed.blobs) == 3
    assert parsed.layers[0].is_foreign
    assert parsed.layers[0].urls == ("https://mcr.example/layer",)
    assert [d.media_type for d in parsed.required_blobs] == [mt.DOCKER_CONFIG, mt.DOCKER_LAYER]


def test_foreign_layer_without_urls_is_required() -> None:
    doc = docker_manifest(layers=[desc(LAYER1, mt.DOCKER_FOREIGN_LAYER)])
    parsed = parse_manifest(dumps(doc), mt.DOCKER_MANIFEST)
    assert len(parsed.required_blobs) == 2


def test_artifact_with_artifact_type_and_subject() -> None:
    subject_body = dumps(oci_manifest())
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": desc(b"{}", mt.OCI_EMPTY),
        "layers": [desc(b"sbom", "application/spdx+json")],
        "subject": desc(subject_body, mt.OCI_MANIFEST),
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    body = dumps(doc)
    parsed = parse_manifest(body, mt.OCI_MANIFEST)
    assert parsed.artifact_type == "application/vnd.example.sbom.v1"
    assert parsed.subject is not None
    assert parsed.subject.digest == Digest.of(subject_body)
    assert parsed.subject.media_type == mt.OCI_MANIFEST
    assert referrer_descriptor(parsed) == {
        "mediaType": mt.OCI_MANIFEST,
        "digest": str(Digest.of(body)),
        "size": len(body),
        "artifactType": "application/vnd.example.sbom.v1",
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }


def test_referrer_descriptor_uses_config_media_type_and_omits_empty_fields() -> None:
    subject = desc(dumps(oci_manifest()), mt.OCI_MANIFEST)
    doc = oci_manifest(config=desc(b"{}", "application/vnd.example.sig.config"), subject=subject)
    parsed = parse_manifest(dumps(doc), None)
    out = referrer_descriptor(parsed)
    assert out["artifactType"] == "application/vnd.example.sig.config"
    assert "annotations" not in out


def test_index_with_subject_and_artifact_type() -> None:
    subject = desc(dumps(oci_manifest()), mt.OCI_MANIFEST)
    doc = index_of(
        mt.OCI_INDEX, mt.OCI_MANIFEST, subject=subject, artifactType="application/x.bundle"
    )
    parsed = parse_manifest(dumps(doc), mt.OCI_INDEX)
    assert parsed.subject is not None and parsed.subject.digest == Digest.parse(subject["digest"])
    assert referrer_descriptor(parsed)["artifactType"] == "application/x.bundle"


def test_index_without_artifact_type_omits_it_in_referrer_descriptor() -> None:
    subject = desc(dumps(oci_manifest()), mt.OCI_MANIFEST)
    parsed = parse_manifest(dumps(index_of(mt.OCI_INDEX, mt.OCI_MANIFEST, subject=subject)), None)
    assert "artifactType" not in referrer_descriptor(parsed)


def test_descriptor_fields_round_trip() -> None:
    child = desc(b"x", mt.OCI_MANIFEST, artifactType="a/b", annotations={"k": "v"})
    parsed = parse_manifest(dumps({"schemaVersion": 2, "manifests": [child]}), None)
    assert parsed.children[0].artifact_type == "a/b"
    assert parsed.children[0].to_dict() == child


def test_parsed_manifest_is_frozen_and_hashable() -> None:
    parsed = parse_manifest(dumps(oci_manifest()), mt.OCI_MANIFEST)
    with pytest.raises(AttributeError):
        parsed.size = 1  # type: ignore[misc]
    assert parsed == parse_manifest(parsed.raw, mt.OCI_MANIFEST)
    assert hash(parsed) == hash(parse_manifest(parsed.raw, mt.OCI_MANIFEST))
    assert isinstance(parsed, ParsedManifest)


# --- media type resolution --------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "", mt.JSON, mt.OCTET_STREAM])
def test_unspecified_content_type_defers_to_body(content_type: str | None) -> None:
    assert parse_manifest(dumps(docker_manifest()), content_type).media_type == mt.DOCKER_MANIFEST


def test_content_type_decides_when_body_has_no_media_type() -> None:
    doc = docker_manifest()
    del doc["mediaType"]
    assert parse_manifest(dumps(doc), mt.DOCKER_MANIFEST).media_type == mt.DOCKER_MANIFEST


def test_detection_without_media_type_or_content_type() -> None:
    manifest = oci_manifest()
    del manifest["mediaType"]
    index = index_of(mt.OCI_INDEX, mt.OCI_MANIFEST)
    del index["mediaType"]
    assert parse_manifest(dumps(manifest), None).media_type == mt.OCI_MANIFEST
    assert parse_manifest(dumps(index), mt.JSON).media_type == mt.OCI_INDEX


@pytest.mark.parametrize(
    ("doc", "content_type"),
    [
        (oci_manifest(), mt.DOCKER_MANIFEST),
        (oci_manifest(), mt.OCI_INDEX),
        (docker_manifest(), mt.OCI_MANIFEST),
        (index_of(mt.OCI_INDEX, mt.OCI_MANIFEST), mt.DOCKER_MANIFEST_LIST),
    ],
)
def test_media_type_must_match_content_type(doc: dict[str, Any], content_type: str) -> None:
    err = invalid(dumps(doc), content_type)
    assert err.detail["reason"] == "mediaType does not match Content-Type"


def test_ambiguous_document_without_any_type_is_rejected() -> None:
    doc = oci_manifest(manifests=[])
    del doc["mediaType"]
    assert "ambiguous" in invalid(dumps(doc), None).detail["reason"]


def test_index_with_layers_is_rejected() -> None:
    doc = index_of(mt.OCI_INDEX, mt.OCI_MANIFEST, layers=[])
    assert "config or layers" in invalid(dumps(doc), mt.OCI_INDEX).detail["reason"]


def test_manifest_with_manifests_is_rejected() -> None:
    assert (
        "must not have manifests"
        in invalid(dumps(oci_manifest(manifests=[])), None).detail["reason"]
    )


def test_undeterminable_type_is_rejected() -> None:
    assert "cannot determine" in invalid(dumps({"schemaVersion": 2}), None).detail["reason"]


@pytest.mark.parametrize(
    ("media_type", "content_type"),
    [
        (mt.OCI_ARTIFACT_MANIFEST, None),
        ("application/vnd.example.thing", None),
        (None, "application/vnd.example.thing"),
        (None, mt.OCI_CONFIG),
    ],
)
def test_unsupported_manifest_media_types(media_type: str | None, content_type: str | None) -> None:
    doc = oci_manifest()
    del doc["mediaType"]
    if media_type:
        doc["mediaType"] = media_type
    assert invalid(dumps(doc), content_type).detail["reason"] == "unsupported manifest media type"


# --- schema 1 and malformed bodies -------------------------------------------------------

SCHEMA1 = {
    "schemaVersion": 1,
    "name": "library/alpine",
    "tag": "latest",
    "architecture": "amd64",
    "fsLayers": [{"blobSum": "sha256:" + "a" * 64}],
    "history": [{"v1Compatibility": "{}"}],
}


@pytest.mark.parametrize(
    "content_type", [None, mt.JSON, mt.DOCKER_SCHEMA1_MANIFEST, mt.DOCKER_SCHEMA1_SIGNED]
)
def test_schema1_rejected(content_type: str | None) -> None:
    assert invalid(dumps(SCHEMA1), content_type).detail["reason"] == "schema1 not supported"


def test_schema1_media_type_in_body_rejected() -> None:
    doc = docker_manifest(mediaType=mt.DOCKER_SCHEMA1_SIGNED)
    assert invalid(dumps(doc), None).detail["reason"] == "schema1 not supported"


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe{}", b'{"schemaVersion": 2,}'])
def test_malformed_json(body: bytes) -> None:
    assert invalid(body, mt.OCI_MANIFEST).detail["reason"].startswith("not valid JSON")


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"null", b"2", b"true"])
def test_json_that_is_not_an_object(body: bytes) -> None:
    assert invalid(body, None).detail["reason"] == "manifest must be a JSON object"


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000 + b"]" * 200_000,  # deep nesting must not become a 500
        b'{"schemaVersion": 2, "x": ' + b"{" * 100_000 + b"}" * 100_000 + b"}",
        b'{"schemaVersion": NaN}',
        b'{"schemaVersion": Infinity}',
    ],
)
def test_hostile_json_is_manifest_invalid(body: bytes) -> None:
    assert invalid(body, mt.OCI_MANIFEST).detail["reason"].startswith("not valid JSON")


def test_descriptor_size_must_fit_int64() -> None:
    doc = oci_manifest()
    doc["layers"][0]["size"] = 2**63
    assert invalid(dumps(doc), None).detail["field"] == "layers[0].size"
    doc["layers"][0]["size"] = 2**63 - 1
    assert parse_manifest(dumps(doc), None).layers[0].size == 2**63 - 1


@pytest.mark.parametrize("version", [None, 3, "2", 2.5, True, 0])
def test_schema_version_must_be_2(version: Any) -> None:
    doc = oci_manifest(schemaVersion=version)
    if version is None:
        del doc["schemaVersion"]
    assert invalid(dumps(doc), mt.OCI_MANIFEST).detail["reason"] == "schemaVersion must be 2"


def test_oversize_manifest_is_413_manifest_invalid() -> None:
    doc = oci_manifest(annotations={"pad": "x" * MAX_MANIFEST_BYTES})
    with pytest.raises(ManifestTooLarge) as info:
        parse_manifest(dumps(doc), mt.OCI_MANIFEST)
    assert info.value.status == 413
    assert info.value.code == "MANIFEST_INVALID"
    assert isinstance(info.value, errors.ManifestInvalid)
    assert info.value.detail["limit"] == MAX_MANIFEST_BYTES


def test_manifest_at_exact_limit_is_accepted() -> None:
    base = dumps(oci_manifest(annotations={"pad": ""}))
    pad = MAX_MANIFEST_BYTES - len(base)
    body = dumps(oci_manifest(annotations={"pad": "x" * pad}))
    assert len(body) == MAX_MANIFEST_BYTES
    assert parse_manifest(body, mt.OCI_MANIFEST).size == MAX_MANIFEST_BYTES
    with pytest.raises(ManifestTooLarge):
        parse_manifest(body, mt.OCI_MANIFEST, max_bytes=MAX_MANIFEST_BYTES - 1)


# --- wrong field types -------------------------------------------------------------------

GOOD = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("config"), "config"),
        (lambda d: d.update(config="sha256:x"), "config"),
        (lambda d: d.pop("layers"), "layers"),
        (lambda d: d.update(layers={"a": 1}), "layers"),
        (lambda d: d.update(layers=["x"]), "layers[0]"),
        (lambda d: d["layers"][1].pop("mediaType"), "layers[1].mediaType"),
        (lambda d: d["layers"][0].update(mediaType=5), "layers[0].mediaType"),
        (lambda d: d["layers"][0].update(mediaType=""), "layers[0].mediaType"),
        (lambda d: d["config"].pop("digest"), "config.digest"),
        (lambda d: d["config"].update(digest="sha256:abc"), "config.digest"),
        (lambda d: d["config"].update(digest="md5:" + "a" * 32), "config.digest"),
        (lambda d: d["config"].update(digest="sha256:" + "A" * 64), "config.digest"),
        (lambda d: d["config"].update(digest=123), "config.digest"),
        (lambda d: d["config"].pop("size"), "config.size"),
        (lambda d: d["config"].update(size=-1), "config.size"),
        (lambda d: d["config"].update(size="12"), "config.size"),
        (lambda d: d["config"].update(size=1.5), "config.size"),
        (lambda d: d["config"].update(size=True), "config.size"),
        (lambda d: d["layers"][0].update(annotations={"a": 1}), "layers[0].annotations"),
        (lambda d: d["layers"][0].update(annotations=["a"]), "layers[0].annotations"),
        (lambda d: d["layers"][0].update(urls="http://x"), "layers[0].urls"),
        (lambda d: d["layers"][0].update(artifactType=7), "layers[0].artifactType"),
        (lambda d: d.update(annotations={"k": None}), "annotations"),
        (lambda d: d.update(mediaType=["x"]), "mediaType"),
        (lambda d: d.update(artifactType={}), "artifactType"),
        (lambda d: d.update(subject="sha256:" + "a" * 64), "subject"),
        (
            lambda d: d.update(subject={"mediaType": mt.OCI_MANIFEST, "digest": "bad", "size": 1}),
            "subject.digest",
        ),
    ],
)
def test_wrong_field_types(mutate: Any, field: str) -> None:
    doc = oci_manifest()
    mutate(doc)
    assert invalid(dumps(doc), None).detail["field"] == field


@pytest.mark.parametrize(
    ("platform", "ok"),
    [
        ({"architecture": "amd64", "os": "linux"}, True),
        ({"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1"}, True),
        ({"architecture": "amd64"}, False),
        ({"os": "linux"}, False),
        ({"architecture": "", "os": "linux"}, False),
        ({"architecture": 1, "os": "linux"}, False),
        ("linux/amd64", False),
    ],
)
def test_platform_validation(platform: Any, ok: bool) -> None:
    doc = {"schemaVersion": 2, "manifests": [desc(b"x", mt.OCI_MANIFEST, platform=platform)]}
    if ok:
        assert parse_manifest(dumps(doc), mt.OCI_INDEX).platforms == (platform,)
    else:
        assert invalid(dumps(doc), mt.OCI_INDEX).detail["field"] == "manifests[0].platform"


def test_index_manifests_must_be_a_list() -> None:
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": {"x": 1}}
    assert invalid(dumps(doc), None).detail["field"] == "manifests"


def test_invalid_error_envelope_is_json_serialisable() -> None:
    err = invalid(dumps(oci_manifest(config={"mediaType": "x", "digest": GOOD, "size": -5})), None)
    envelope = json.loads(errors.error_body(err))
    assert envelope["errors"][0]["code"] == "MANIFEST_INVALID"
    assert envelope["errors"][0]["detail"]["field"] == "config.size"


# --- media type helpers and Accept negotiation --------------------------------------------


def test_type_predicates() -> None:
    assert mt.is_index(mt.OCI_INDEX) and mt.is_index(mt.DOCKER_MANIFEST_LIST + "; x=y")
    assert not mt.is_index(mt.OCI_MANIFEST)
    assert mt.is_manifest(mt.OCI_MANIFEST) and mt.is_manifest(mt.DOCKER_MANIFEST.upper())
    assert not mt.is_manifest(mt.OCI_INDEX) and not mt.is_manifest(None)
    assert all(mt.is_manifest_type(t) for t in mt.DEFAULT_ACCEPT)
    assert not mt.is_manifest_type(mt.DOCKER_SCHEMA1_SIGNED)
    assert mt.is_schema1(mt.DOCKER_SCHEMA1_MANIFEST)
    assert mt.is_foreign_layer(mt.DOCKER_FOREIGN_LAYER) and mt.is_foreign_layer(
        mt.OCI_LAYER_NONDIST_GZIP
    )
    assert not mt.is_foreign_layer(mt.OCI_LAYER_GZIP)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], []),
        ([""], []),
        ([mt.OCI_MANIFEST], [mt.OCI_MANIFEST]),
        (
            [f"{mt.OCI_INDEX}, {mt.OCI_MANIFEST};q=0.9", mt.DOCKER_MANIFEST],
            [mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST],
        ),
        (
            [f"{mt.DOCKER_MANIFEST}, {mt.DOCKER_MANIFEST}", mt.DOCKER_MANIFEST.upper()],
            [mt.DOCKER_MANIFEST],
        ),
        ([f"{mt.OCI_MANIFEST}; q=0, */*;q=0.1"], ["*/*"]),
        ([f"{mt.OCI_MANIFEST};q=0.0"], []),
        ([f"{mt.OCI_MANIFEST};q=abc"], [mt.OCI_MANIFEST]),
        ([" , ,garbage, ;q=1", "text/html ;level=1"], ["text/html"]),
    ],
)
def test_parse_accept(headers: list[str], expected: list[str]) -> None:
    assert mt.parse_accept(headers) == expected


DOCKERD_ACCEPT = [mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.OCI_INDEX, mt.OCI_MANIFEST]


@pytest.mark.parametrize(
    ("media_type", "headers", "ok"),
    [
        (mt.OCI_MANIFEST, [], True),  # no Accept: stored manifest is served
        (mt.OCI_INDEX, [], True),
        (mt.OCI_MANIFEST, [", ".join(DOCKERD_ACCEPT)], True),
        (mt.OCI_MANIFEST, [mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST], False),  # old docker
        (mt.OCI_INDEX, [mt.OCI_MANIFEST], False),
        (mt.DOCKER_MANIFEST_LIST, [mt.DOCKER_MANIFEST], False),  # never narrowed to one platform
        (mt.DOCKER_MANIFEST, [mt.DOCKER_SCHEMA1_SIGNED], False),  # schema1-only client
        (mt.DOCKER_MANIFEST, [mt.DOCKER_MANIFEST + "; q=0.5"], True),
        (mt.OCI_MANIFEST, ["*/*"], True),
        (mt.OCI_MANIFEST, [mt.DOCKER_MANIFEST, "application/*"], True),
        (mt.OCI_MANIFEST, [mt.JSON], True),  # names no manifest type: treated as no Accept
        (mt.OCI_MANIFEST, [f"{mt.OCI_MANIFEST};q=0", mt.DOCKER_MANIFEST], False),
    ],
)
def test_acceptable(media_type: str, headers: list[str], ok: bool) -> None:
    assert mt.acceptable(media_type, mt.parse_accept(headers)) is ok


def test_require_acceptable_raises_manifest_unknown_with_distribution_message() -> None:
    mt.require_acceptable(mt.OCI_MANIFEST, [])
    with pytest.raises(errors.ManifestUnknown) as info:
        mt.require_acceptable(mt.OCI_MANIFEST, [mt.DOCKER_MANIFEST])
    assert info.value.status == 404
    assert info.value.code == "MANIFEST_UNKNOWN"
    assert info.value.msg == "OCI manifest found, but accept header does not support OCI manifests"
    with pytest.raises(errors.ManifestUnknown) as info:
        mt.require_acceptable(mt.OCI_INDEX, [mt.OCI_MANIFEST])
    assert info.value.msg == "OCI index found, but accept header does not support OCI indexes"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], ", ".join(mt.DEFAULT_ACCEPT)),
        (["*/*"], ", ".join(mt.DEFAULT_ACCEPT)),
        ([mt.JSON], ", ".join(mt.DEFAULT_ACCEPT)),
        ([f"{mt.DOCKER_MANIFEST}, */*"], ", ".join(mt.DEFAULT_ACCEPT)),
        ([mt.DOCKER_SCHEMA1_SIGNED], ", ".join(mt.DEFAULT_ACCEPT)),
        (
            [f"{mt.DOCKER_MANIFEST};q=0.5, {mt.JSON}", mt.DOCKER_MANIFEST_LIST],
            f"{mt.DOCKER_MANIFEST}, {mt.DOCKER_MANIFEST_LIST}",
        ),
    ],
)
def test_upstream_accept(headers: list[str], expected: str) -> None:
    assert mt.upstream_accept(mt.parse_accept(headers)) == expected
