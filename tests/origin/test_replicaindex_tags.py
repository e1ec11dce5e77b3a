"""The referrers tag schema's tag form (``<alg>-<ref>``, ``<ref>`` limited to 64 characters)
for sha256 and sha512 subjects, and what a tag tells of its subject."""

from __future__ import annotations

import hashlib

from origin.replicaindex import fallback_prefix, fallback_subject, fallback_tag, is_fallback_tag
from regcore.digest import Digest


def test_sha256_tag_names_the_whole_digest() -> None:
    subject = Digest.of(b"x")
    tag = fallback_tag(subject)
    assert tag == f"sha256-{subject.hex}" and is_fallback_tag(tag)
    assert fallback_subject(tag) == subject
    assert fallback_prefix(tag) == ("sha256", subject.hex)


def test_sha512_tag_truncates_to_64_hex_digits_and_names_a_prefix_only() -> None:
    subject = Digest.of(b"x", "sha512")
    tag = fallback_tag(subject)
    assert tag == "sha512-" + hashlib.sha512(b"x").hexdigest()[:64] and len(tag) == 71
    assert is_fallback_tag(tag) and fallback_subject(tag) is None
    assert fallback_prefix(tag) == ("sha512", subject.hex[:64])
    assert subject.hex.startswith(fallback_prefix(tag)[1])  # type: ignore[index]


def test_other_tags_are_not_fallback_tags() -> None:
    for tag in ("v1", "sha512-" + "a" * 128, "sha256-" + "a" * 63, "sha1-" + "a" * 64):
        assert not is_fallback_tag(tag) and fallback_prefix(tag) is None
    assert is_fallback_tag("sha384-" + "b" * 64) and fallback_subject("sha384-" + "b" * 64) is None
