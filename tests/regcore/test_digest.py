"""Digest parsing and the streaming hasher (regcore/digest.py)."""

from __future__ import annotations

import hashlib

import pytest

from regcore import errors
from regcore.digest import Digest, Hasher, is_digest

HEX256 = hashlib.sha256(b"hello").hexdigest()
HEX512 = hashlib.sha512(b"hello").hexdigest()


@pytest.mark.parametrize(
    ("value", "algorithm"), [(f"sha256:{HEX256}", "sha256"), (f"sha512:{HEX512}", "sha512")]
)
def test_parse_valid(value: str, algorithm: str) -> None:
    digest = Digest.parse(value)
    assert digest.algorithm == algorithm
    assert str(digest) == value
    assert is_digest(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "invalid digest"),
        ("sha256", "invalid digest"),
        (HEX256, "invalid digest"),
        (f"sha256:{HEX256[:-1]}", "invalid digest"),  # too short
        (f"sha256:{HEX256}0", "invalid digest"),  # too long
        (f"sha256:{HEX256.upper()}", "invalid digest"),  # upper-case hex is not canonical
        (f"sha256:{HEX256[:-1]}g", "invalid digest"),
        (f"sha512:{HEX256}", "invalid digest"),  # sha256 length under sha512
        (f"SHA256:{HEX256}", "invalid digest"),
        (f"md5:{hashlib.md5(b'x').hexdigest()}", "unsupported digest algorithm"),
        (f"sha384:{hashlib.sha384(b'x').hexdigest()}", "unsupported digest algorithm"),
        (f"sha256+b64u:{HEX256}", "unsupported digest algorithm"),
        (f" sha256:{HEX256}", "invalid digest"),
        (f"sha256:{HEX256}\n", "invalid digest"),
        ("sha256:" + "a" * 300, "invalid digest"),
    ],
)
def test_parse_invalid(value: str, message: str) -> None:
    assert not is_digest(value)
    with pytest.raises(errors.DigestInvalid) as info:
        Digest.parse(value)
    assert info.value.code == "DIGEST_INVALID"
    assert info.value.status == 400
    assert info.value.msg == message
    assert len(str(info.value.detail)) <= 103  # the offending value is clipped


def test_parse_non_string() -> None:
    with pytest.raises(errors.DigestInvalid):
        Digest.parse(None)  # type: ignore[arg-type]


def test_of_matches_hashlib() -> None:
    assert Digest.of(b"hello") == Digest("sha256", HEX256)
    assert Digest.of(b"hello", "sha512") == Digest("sha512", HEX512)


def test_digest_is_hashable_value() -> None:
    a = Digest.parse(f"sha256:{HEX256}")
    b = Digest.of(b"hello")
    assert a == b
    assert {a: 1}[b] == 1


def test_hasher_streams_and_counts() -> None:
    data = bytes(range(256)) * 1000
    hasher = Hasher()
    for i in range(0, len(data), 4093):
        hasher.update(memoryview(data)[i : i + 4093])
    assert hasher.size == len(data)
    assert hasher.digest() == Digest.of(data)


def test_hasher_copy_is_independent() -> None:
    hasher = Digest.of(b"").hasher()
    hasher.update(b"abc")
    snapshot = hasher.copy()
    hasher.update(b"def")
    assert snapshot.digest() == Digest.of(b"abc")
    assert snapshot.size == 3
    assert hasher.digest() == Digest.of(b"abcdef")
    assert hasher.size == 6


def test_hasher_sha512_and_unknown_algorithm() -> None:
    hasher = Hasher("sha512")
    hasher.update(bytearray(b"hello"))
    assert str(hasher.digest()) == f"sha512:{HEX512}"
    with pytest.raises(errors.DigestInvalid):
        Hasher("md5")
