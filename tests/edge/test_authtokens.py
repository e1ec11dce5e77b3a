"""The JWKS parsing of edge/authtokens.py: the origin's own document yields its key under its
``kid``; anything that is not a usable signing key is skipped, never an error."""

from __future__ import annotations

from typing import Any

import pytest

from edge.authtokens import JWKS_MAX_KEYS, parse_jwks
from regcore.auth.signing import jwks_document
from regcore.auth.tokens import TokenIssuer


def test_the_origins_document_gives_its_key_under_its_kid() -> None:
    issuer = TokenIssuer.generate(header="both")
    keys = parse_jwks(jwks_document(issuer))
    assert list(keys) == [issuer.key_id]
    key, alg = keys[issuer.key_id]
    assert alg == "ES256"
    assert key.public_numbers() == issuer.cert.public_key().public_numbers()  # type: ignore[union-attr]


@pytest.mark.parametrize("doc", [None, [], "keys", {"keys": "x"}, {"nokeys": []}])
def test_a_document_that_is_no_jwks_is_refused(doc: Any) -> None:
    with pytest.raises(ValueError):
        parse_jwks(doc)


def test_unusable_entries_are_skipped() -> None:
    good = jwks_document(TokenIssuer.generate(header="both"))["keys"][0]
    entries = [
        {**good, "kid": 7},  # kid not a string
        {k: v for k, v in good.items() if k != "kid"},  # no kid
        {**good, "kid": "enc", "use": "enc"},  # not a signing key
        {**good, "kid": "oct", "kty": "oct", "k": "c2VjcmV0"},  # symmetric: never trusted
        {**good, "kid": "broken", "x": "AAAA"},  # not a point on the curve
        "not a mapping",
        {**good, "kid": "ok"},
    ]
    assert list(parse_jwks({"keys": entries})) == ["ok"]


def test_at_most_a_bounded_number_of_keys_is_read() -> None:
    good = jwks_document(TokenIssuer.generate(header="both"))["keys"][0]
    many = [{**good, "kid": f"k{i}"} for i in range(JWKS_MAX_KEYS + 10)]
    assert len(parse_jwks({"keys": many})) == JWKS_MAX_KEYS
