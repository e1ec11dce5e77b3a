"""The edge's negotiation of a stored manifest against a client's Accept (distribution's
``GetManifest`` rules): :func:`regcore.mediatypes.negotiate`, ``check_platform_child`` and the
memoised :class:`edge.negotiation.Negotiation` with its list-child lookup."""

from __future__ import annotations

import json

import pytest

from edge.negotiation import Negotiation, find_platform_child
from regcore import errors
from regcore import mediatypes as mt

DOCKERD = [mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.OCI_MANIFEST, mt.OCI_INDEX]
SINGLE = [mt.OCI_MANIFEST, mt.DOCKER_MANIFEST]
D = "sha256:" + "a" * 64
E = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("media_type", "headers", "by_tag", "verdict"),
    [
        # every type listed, or none named at all: the stored manifest
        (mt.OCI_INDEX, [", ".join(DOCKERD)], True, "serve"),
        (mt.DOCKER_MANIFEST_LIST, [], True, "serve"),
        (mt.OCI_MANIFEST, [mt.JSON], True, "serve"),
        (mt.DOCKER_MANIFEST_LIST, ["*/*"], True, "serve"),
        (mt.DOCKER_MANIFEST_LIST, [f"{mt.DOCKER_MANIFEST}, application/*"], True, "serve"),
        # single-image clients
        (mt.OCI_MANIFEST, [", ".join(SINGLE)], True, "serve"),
        (mt.DOCKER_MANIFEST, [", ".join(SINGLE)], False, "serve"),
        (mt.DOCKER_MANIFEST_LIST, [", ".join(SINGLE)], True, "narrow"),
        (mt.DOCKER_MANIFEST_LIST, [", ".join(SINGLE)], False, "serve"),  # by digest: as is
        (mt.DOCKER_MANIFEST_LIST, [mt.DOCKER_SCHEMA1_SIGNED, mt.JSON], True, "narrow"),
        # distribution serves schema 2 (and unknown types) whatever was listed
        (mt.DOCKER_MANIFEST, [mt.OCI_MANIFEST], True, "serve"),
        (mt.DOCKER_MANIFEST, [mt.DOCKER_SCHEMA1_SIGNED], True, "serve"),
        (mt.DOCKER_SCHEMA1_SIGNED, [mt.OCI_MANIFEST], True, "serve"),
        (mt.OCI_INDEX, [mt.OCI_INDEX], False, "serve"),
    ],
)
def test_negotiate(media_type: str, headers: list[str], by_tag: bool, verdict: str) -> None:
    accepted = mt.parse_accept(headers)
    assert mt.negotiate(media_type, accepted, by_tag=by_tag) == verdict
    assert Negotiation().decide(media_type, accepted, by_tag=by_tag) == verdict


@pytest.mark.parametrize(
    ("media_type", "headers", "message"),
    [
        (mt.OCI_INDEX, SINGLE, "OCI index found, but accept header does not support OCI indexes"),
        (mt.OCI_INDEX, [mt.DOCKER_MANIFEST_LIST], "OCI index found"),  # never narrowed
        (mt.OCI_MANIFEST, [mt.DOCKER_MANIFEST], "OCI manifest found"),
        (mt.OCI_MANIFEST, [f"{mt.OCI_MANIFEST};q=0", mt.DOCKER_MANIFEST], "OCI manifest found"),
    ],
)
def test_negotiate_refuses_oci_types_not_listed_by_tag_and_by_digest(
    media_type: str, headers: list[str], message: str
) -> None:
    accepted = mt.parse_accept(headers)
    negotiation = Negotiation()
    for by_tag in (True, False):
        with pytest.raises(errors.ManifestUnknown) as info:
            mt.negotiate(media_type, accepted, by_tag=by_tag)
        assert info.value.status == 404 and info.value.msg.startswith(message)
        for _ in range(2):  # the memoised refusal is raised afresh every time
            with pytest.raises(errors.ManifestUnknown) as again:
                negotiation.decide(media_type, accepted, by_tag=by_tag)
            assert again.value.msg == info.value.msg


def test_check_platform_child() -> None:
    mt.check_platform_child(mt.DOCKER_MANIFEST, [mt.DOCKER_MANIFEST])
    mt.check_platform_child(mt.OCI_MANIFEST, [mt.DOCKER_MANIFEST])
    with pytest.raises(errors.ManifestInvalid) as info:
        mt.check_platform_child(mt.DOCKER_MANIFEST, [mt.OCI_MANIFEST])
    assert info.value.status == 400
    assert info.value.msg == "Schema 2 manifest not supported by client"
    with pytest.raises(errors.ManifestInvalid):
        Negotiation().check_child(mt.DOCKER_MANIFEST, [mt.DOCKER_SCHEMA1_SIGNED])


def _list(*entries: dict[str, object]) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": entries}
    ).encode()


def _entry(digest: str, os: str, arch: str, **extra: object) -> dict[str, object]:
    return {
        "mediaType": mt.DOCKER_MANIFEST,
        "digest": digest,
        "size": 7,
        "platform": {"os": os, "architecture": arch, **extra},
    }


def test_platform_child_is_the_first_linux_amd64_entry() -> None:
    body = _list(_entry(E, "linux", "arm64"), _entry(D, "linux", "amd64", variant="v3"))
    child = find_platform_child(body)
    assert child is not None and (child.digest, child.media_type, child.size) == (
        D,
        mt.DOCKER_MANIFEST,
        7,
    )
    assert find_platform_child(_list(_entry(D, "windows", "amd64"))) is None
    assert find_platform_child(_list(_entry("sha256:zz", "linux", "amd64"))) is None
    for junk in (b"", b"[]", b'{"manifests": 3}', b'{"manifests": [1, {"platform": 2}]}'):
        assert find_platform_child(junk) is None
    negotiation = Negotiation()
    assert negotiation.platform_child(E, body) == child
    assert negotiation.platform_child(E, b"") == child  # memoised by the list's digest
