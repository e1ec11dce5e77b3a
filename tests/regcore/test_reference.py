"""Repository names, tags, manifest references and image references."""

from __future__ import annotations

import pytest

from regcore import errors
from regcore.digest import Digest
from regcore.reference import (
    NAME_MAX_LENGTH,
    ImageRef,
    Tag,
    check_raw_path,
    is_valid_name,
    is_valid_tag,
    normalize_docker_hub,
    parse_reference,
    split_image_ref,
    validate_name,
    validate_tag,
)

SHA = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "alpine",
        "library/alpine",
        "a/b/c",
        "team/sub/group/app",
        "a0/9z",
        "my.app",
        "my_app",
        "my__app",
        "my-app",
        "my---app",
        "a.b_c__d-e--f",
        "x" * NAME_MAX_LENGTH,
        "/".join(["abc"] * 63) + "/abc",  # 255 characters across many components
    ],
)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name
    assert is_valid_name(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("Alpine", "upper-case"),
        ("team/App", "upper-case"),
        ("a//b", "empty path component"),
        ("/a", "empty path component"),
        ("a/", "empty path component"),
        ("a/../b", "'..'"),
        ("..", "'..'"),
        ("a/./b", "'..'"),
        ("a..b", "'..'"),
        ("a%2Fb", "percent"),
        ("a%2fb", "percent"),
        ("-a", "start and end"),
        ("a-", "start and end"),
        ("a/_b", "start and end"),
        ("a.", "start and end"),
        ("a___b", "does not match"),
        ("a_.b", "does not match"),
        ("a b", "does not match"),
        ("a:b", "does not match"),
        ("a@b", "does not match"),
        ("é", "does not match"),
        ("x" * (NAME_MAX_LENGTH + 1), "longer than 255"),
    ],
)
def test_invalid_names_raise_name_invalid_with_reason(name: str, reason: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(errors.NameInvalid) as info:
        validate_name(name)
    assert info.value.code == "NAME_INVALID"
    assert info.value.status == 400
    assert reason in info.value.detail["reason"]


def test_invalid_name_detail_is_clipped() -> None:
    with pytest.raises(errors.NameInvalid) as info:
        validate_name("A" * 1000)
    assert len(info.value.detail["name"]) <= 103


def test_non_string_name_is_invalid() -> None:
    assert not is_valid_name(None)
    with pytest.raises(errors.NameInvalid):
        validate_name(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tag",
    ["latest", "v1.0.0", "1", "_private", "A-b_c.D", "x" * 128, "sha256-" + "a" * 64 + ".sig"],
)
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag
    assert is_valid_tag(tag)


@pytest.mark.parametrize(
    "tag",
    ["", ".hidden", "-dash", "x" * 129, "a/b", "a:b", "a b", "a+b", "tag@x", "ümlaut", "latest\n"],
)
def test_invalid_tags_raise_tag_invalid(tag: str) -> None:
    assert not is_valid_tag(tag)
    with pytest.raises(errors.TagInvalid) as info:
        validate_tag(tag)
    assert info.value.code == "TAG_INVALID"
    assert info.value.status == 400


def test_parse_reference_tag() -> None:
    ref = parse_reference("v1.2")
    assert ref == Tag("v1.2")
    assert isinstance(ref, Tag)
    assert str(ref) == "v1.2"


def test_parse_reference_digest() -> None:
    ref = parse_reference(SHA)
    assert isinstance(ref, Digest)
    assert str(ref) == SHA


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "a" * 32, "sha256:" + "AB" * 32, ":x"])
def test_parse_reference_bad_digest_raises_digest_invalid(bad: str) -> None:
    with pytest.raises(errors.DigestInvalid):
        parse_reference(bad)


@pytest.mark.parametrize("bad", ["", ".x", "x" * 129, "a/b"])
def test_parse_reference_bad_tag_raises_tag_invalid(bad: str) -> None:
    with pytest.raises(errors.TagInvalid):
        parse_reference(bad)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/",
        "/v2/a/b/c/manifests/latest",
        "/v2/library/alpine/blobs/" + SHA,
        "/v2/a/blobs/uploads/",
        "/v2/a/tags/list?n=10&last=a%2Fb",  # the query is not checked
    ],
)
def test_check_raw_path_accepts_clean_paths(path: str) -> None:
    check_raw_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/a%2Fb/manifests/latest",
        "/v2/a%2fb/manifests/latest",
        "/v2/a/%2e%2e/b/manifests/latest",
        "/v2/a%252Fb/manifests/latest",
        "/v2/a//b/manifests/latest",
        "/v2/a/../b/manifests/latest",
        "/v2/./a/manifests/latest",
        "/v2/a\\b/manifests/latest",
    ],
)
def test_check_raw_path_rejects_smuggled_names(path: str) -> None:
    with pytest.raises(errors.NameInvalid):
        check_raw_path(path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alpine", "library/alpine"),
        ("library/alpine", "library/alpine"),
        ("bitnami/redis", "bitnami/redis"),
    ],
)
def test_normalize_docker_hub(name: str, expected: str) -> None:
    assert normalize_docker_hub(name) == expected


def test_normalize_docker_hub_validates() -> None:
    with pytest.raises(errors.NameInvalid):
        normalize_docker_hub("Alpine")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("alpine", ImageRef("docker.io", "library/alpine")),
        ("alpine:3.19", ImageRef("docker.io", "library/alpine", "3.19")),
        ("bitnami/redis:7", ImageRef("docker.io", "bitnami/redis", "7")),
        ("docker.io/alpine", ImageRef("docker.io", "library/alpine")),
        ("localhost/app", ImageRef("localhost", "app")),
        ("localhost:5000/team/app:1.0", ImageRef("localhost:5000", "team/app", "1.0")),
        ("127.0.0.1:41234/a/b/c:t", ImageRef("127.0.0.1:41234", "a/b/c", "t")),
        ("ghcr.io/org/img", ImageRef("ghcr.io", "org/img")),
        ("[::1]:5000/app:x", ImageRef("[::1]:5000", "app", "x")),
        ("reg.example:443/app@" + SHA, ImageRef("reg.example:443", "app", None, Digest.parse(SHA))),
        ("reg.example/app:v1@" + SHA, ImageRef("reg.example", "app", "v1", Digest.parse(SHA))),
    ],
)
def test_split_image_ref(ref: str, expected: ImageRef) -> None:
    assert split_image_ref(ref) == expected


def test_split_image_ref_default_registry_and_reference() -> None:
    ref = split_image_ref("team/app", default_registry="127.0.0.1:5000")
    assert ref == ImageRef("127.0.0.1:5000", "team/app")
    assert ref.reference == "latest"
    assert str(ref) == "127.0.0.1:5000/team/app"
    pinned = split_image_ref("h.io/app:v1@" + SHA)
    assert pinned.reference == SHA
    assert str(pinned) == "h.io/app:v1@" + SHA


@pytest.mark.parametrize(
    ("ref", "exc"),
    [
        ("", errors.NameInvalid),
        ("team/App:1", errors.NameInvalid),
        ("h.io/App:1", errors.NameInvalid),
        ("h.io/app:.bad", errors.TagInvalid),
        ("h.io/app@sha256:123", errors.DigestInvalid),
        ("bad_host.io/app", errors.NameInvalid),
    ],
)
def test_split_image_ref_errors(ref: str, exc: type[errors.RegistryError]) -> None:
    with pytest.raises(exc):
        split_image_ref(ref)
