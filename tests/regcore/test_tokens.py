"""regcore.auth.tokens: scopes, issuing and verifying, and acceptance by a real docker-registry
2.8 for every signing mode (ES256/RS256, x5c chain/libtrust kid)."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Callable

import jwt
import pytest

from harness.registry import DockerRegistry
from harness.tokenserver import TokenServer
from regcore import errors
from regcore.auth.tokens import (
    Access,
    TokenIssuer,
    access_from_claims,
    allows,
    generate_key,
    libtrust_key_id,
    make_certificate,
    parse_scopes,
)
from regcore.client import RegistryClient

RegistryFactory = Callable[..., DockerRegistry]
PULL_PUSH = [Access("repository", "team/app", ("pull", "push"))]


def _b64json(part: str) -> dict[str, object]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# -- scopes ---------------------------------------------------------------------------------


def test_scope_parsing() -> None:
    assert Access.parse("repository:team/app:pull,push") == Access(
        "repository", "team/app", ("pull", "push")
    )
    assert Access.parse("repository:localhost:5000/app:pull").name == "localhost:5000/app"
    assert Access.parse("registry:catalog:*") == Access("registry", "catalog", ("*",))
    assert str(Access.parse("repository:a:pull,pull,push")) == "repository:a:pull,push"
    for bad in ("repository", "repository:name", ":a:pull", "repository::pull"):
        with pytest.raises(ValueError):
            Access.parse(bad)
    merged = parse_scopes(["repository:a:pull repository:b:push", "repository:a:push", "junk"])
    assert merged == [
        Access("repository", "a", ("pull", "push")),
        Access("repository", "b", ("push",)),
    ]


# -- issue and verify -----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
@pytest.mark.parametrize("header", ["x5c", "kid"])
def test_issued_token_has_the_registry_shape_and_verifies(algorithm: str, header: str) -> None:
    issuer = TokenIssuer.generate(
        "iss.example", "registry.example", algorithm=algorithm, header=header
    )  # type: ignore[arg-type]
    issued = issuer.issue("alice", PULL_PUSH, ttl=120)
    head_b64, claims_b64, _sig = issued.token.split(".")
    head, claims = _b64json(head_b64), _b64json(claims_b64)
    assert head["alg"] == algorithm and head["typ"] == "JWT"
    if header == "x5c":
        assert isinstance(head["x5c"], list) and len(head["x5c"]) == 2 and "kid" not in head
    else:
        assert (
            re.fullmatch(r"([A-Z2-7]{4}:){11}[A-Z2-7]{4}", str(head["kid"])) and "x5c" not in head
        )
    assert claims["iss"] == "iss.example" and claims["sub"] == "alice"
    assert claims["aud"] == "registry.example"  # a string: registry 2.8 rejects a list
    assert claims["exp"] == claims["iat"] + 120 and claims["nbf"] == claims["iat"]  # type: ignore[operator]
    assert claims["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]}
    ]
    body = issued.to_response()
    assert body["token"] == body["access_token"] == issued.token and body["expires_in"] == 120

    verified = issuer.verify(issued.token)
    assert access_from_claims(verified) == PULL_PUSH
    assert allows(verified, "repository", "team/app", "push")
    assert not allows(verified, "repository", "team/app", "delete")
    assert not allows(verified, "repository", "team/other", "pull")


def test_verify_rejects_foreign_expired_tampered_and_misaddressed_tokens() -> None:
    now = [time.time()]
    issuer = TokenIssuer.generate("iss", "svc", clock=lambda: now[0])
    token = issuer.issue("alice", PULL_PUSH, ttl=300).token
    assert issuer.verify(token)["sub"] == "alice"

    stranger = TokenIssuer.generate("iss", "svc", clock=lambda: now[0])
    with pytest.raises(errors.Unauthorized, match="not trusted"):
        stranger.verify(token)
    with pytest.raises(errors.Unauthorized):
        issuer.verify(token, service="another-service")
    with pytest.raises(errors.Unauthorized):
        TokenIssuer(issuer.key, issuer.cert, "other-issuer", "svc", chain=issuer.chain).verify(
            token
        )

    head, claims, sig = token.split(".")
    forged = _b64json(claims) | {"access": [{"type": "repository", "name": "*", "actions": ["*"]}]}
    forged_part = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(errors.Unauthorized):
        issuer.verify(f"{head}.{forged_part}.{sig}")
    unsigned = jwt.encode(
        _b64json(claims), key=None, algorithm="none", headers={"x5c": _b64json(head)["x5c"]}
    )
    with pytest.raises(errors.Unauthorized):
        issuer.verify(unsigned)
    with pytest.raises(errors.Unauthorized):
        issuer.verify("not-a-token")

    # a key the bundle does not hold, with a self-made certificate in x5c
    rogue_key = generate_key()
    rogue = TokenIssuer(
        rogue_key,
        make_certificate(rogue_key, issuer.chain[0].subject.rfc4514_string()),
        "iss",
        "svc",
    )
    with pytest.raises(errors.Unauthorized):
        issuer.verify(rogue.issue("mallory", PULL_PUSH).token)

    now[0] += 300 + 61  # past exp + 60 s leeway
    with pytest.raises(errors.Unauthorized):
        issuer.verify(token)


def test_libtrust_key_id_is_stable_and_key_specific() -> None:
    key = generate_key("ES256")
    assert libtrust_key_id(key.public_key()) == libtrust_key_id(key.public_key())
    assert libtrust_key_id(key.public_key()) != libtrust_key_id(generate_key("ES256").public_key())


# -- a real docker-registry trusts them ---------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "header"),
    [("ES256", "x5c"), ("RS256", "x5c"), ("ES256", "kid"), ("RS256", "kid")],
)
async def test_docker_registry_accepts_our_tokens(
    registry_factory: RegistryFactory, algorithm: str, header: str
) -> None:
    async with TokenServer(
        users={"ci": "pw"},
        grants={"ci": {"team/*": ["pull", "push"]}, "": {"team/public": ["pull"]}},
        algorithm=algorithm,
        header=header,  # type: ignore[arg-type]
    ) as tokens:
        registry = registry_factory(auth_token=tokens.token_auth())
        data = os.urandom(4096)
        async with RegistryClient(registry.url, username="ci", password="pw") as client:
            digest = await client.push_blob("team/app", data)
            assert await client.get_blob("team/app", digest) == data
            await client.push_blob("team/public", data)
        async with RegistryClient(registry.url) as anonymous:
            assert await anonymous.get_blob("team/public", digest) == data  # anonymous grant
            with pytest.raises(errors.Unauthorized):
                await anonymous.get_blob("team/app", digest)
    granted = {g for r in tokens.requests for g in r.granted}
    assert "repository:team/app:pull,push" in granted and "repository:team/public:pull" in granted
