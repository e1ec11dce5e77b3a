"""The built-in token service and the origin in ``auth.token`` mode, over HTTP."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jwt
import pytest

from origin.access import ACCESS
from regcore.auth.htpasswd import hash_password, read_entries, write_entries
from regcore.auth.tokens import Access
from tests.origin.authfixtures import USERS, auth_overrides, basic, bearer, push_image
from tests.origin.conftest import OriginFactory, OriginUnderTest


@pytest.fixture
async def origin(origin_factory: OriginFactory, tmp_path: Path) -> OriginUnderTest:
    return await origin_factory(overrides=auth_overrides(tmp_path, "token"))


async def token_for(
    origin: OriginUnderTest, user: str | None, *scopes: str, **params: str
) -> dict[str, Any]:
    headers = basic(user, USERS[user]) if user else {}
    query = [("service", "quayside"), *(("scope", s) for s in scopes), *params.items()]
    resp = await origin.client.get("/auth/token", params=query, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def claims_of(origin: OriginUnderTest, token: str) -> dict[str, Any]:
    return origin.app[ACCESS].authenticator.verifier.verify(token)  # type: ignore[union-attr]


async def test_grants_intersection_of_scopes_and_roles(origin: OriginUnderTest) -> None:
    scopes = ("repository:team/app:pull,push,delete", "repository:public/base:pull,push")
    expected = {
        "alice": {"team/app": ["pull", "push", "delete"], "public/base": ["pull", "push"]},
        "bob": {"team/app": ["pull", "push"], "public/base": ["pull"]},
        "carol": {"team/app": ["pull"], "public/base": ["pull"]},
        None: {"public/base": ["pull"]},
    }
    for user, want in expected.items():
        body = await token_for(origin, user, *scopes)
        assert body["token"] == body["access_token"]
        assert body["expires_in"] == 300 and body["issued_at"].endswith("Z")
        claims = claims_of(origin, body["token"])
        assert claims["sub"] == (user or "") and claims["aud"] == "quayside"
        assert {a["name"]: a["actions"] for a in claims["access"]} == want


async def test_wrong_password_401_and_no_token(origin: OriginUnderTest) -> None:
    resp = await origin.client.get(
        "/auth/token", params={"service": "quayside"}, headers=basic("alice", "wrong")
    )
    assert resp.status == 401
    body = await resp.text()
    assert "token" not in (await resp.json()) and "wrong" not in body
    resp = await origin.client.get("/auth/token", params={"service": "elsewhere"})
    assert resp.status == 400


async def test_registry_challenges_with_bearer_realm_service_scope(
    origin: OriginUnderTest,
) -> None:
    resp = await origin.client.get("/v2/")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer realm="http://127.0.0.1:1/auth/token",service="quayside"'
    )
    resp = await origin.client.post("/v2/team/app/blobs/uploads/")
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer realm="http://127.0.0.1:1/auth/token",service="quayside",'
        'scope="repository:team/app:pull,push"'
    )
    resp = await origin.client.get("/v2/", headers=basic("alice", USERS["alice"]))
    assert resp.status == 401  # token mode: Basic is not accepted by the registry routes
    resp = await origin.client.get("/v2/", headers=bearer("garbage"))
    assert resp.status == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_push_pull_with_tokens_scope_enforced(origin: OriginUnderTest) -> None:
    bob = (await token_for(origin, "bob", "repository:team/app:pull,push"))["token"]
    status, digest = await push_image(origin.client, "team/app", "1", bearer(bob))
    assert status == 201
    pull_only = (await token_for(origin, "bob", "repository:team/app:pull"))["token"]
    assert (
        await origin.client.get("/v2/team/app/manifests/1", headers=bearer(pull_only))
    ).status == 200
    # bob may push, the token just lacks it: 401 insufficient_scope (the client gets a better one)
    resp = await origin.client.post("/v2/team/app/blobs/uploads/", headers=bearer(pull_only))
    assert resp.status == 401
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
    # carol's roles forbid it: 403 DENIED (another token would not help)
    carol = (await token_for(origin, "carol", "repository:team/app:pull,push"))["token"]
    resp = await origin.client.post("/v2/team/app/blobs/uploads/", headers=bearer(carol))
    assert resp.status == 403 and (await resp.json())["errors"][0]["code"] == "DENIED"
    # a token for one repository opens no other
    resp = await origin.client.get("/v2/public/base/tags/list", headers=bearer(bob))
    assert resp.status == 401
    resp = await origin.client.delete(f"/v2/team/app/manifests/{digest}", headers=bearer(bob))
    assert resp.status == 403


async def test_expired_and_foreign_tokens_refused(origin: OriginUnderTest) -> None:
    issuer = origin.app[ACCESS].issuer
    assert issuer is not None
    access = [Access("repository", "team/app", ("pull",))]
    old = issuer.issue("alice", access, ttl=-120).token
    resp = await origin.client.get("/v2/team/app/tags/list", headers=bearer(old))
    assert resp.status == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    from regcore.auth.tokens import TokenIssuer

    stranger = TokenIssuer.generate("quayside", "quayside").issue("alice", access).token
    resp = await origin.client.get("/v2/team/app/tags/list", headers=bearer(stranger))
    assert resp.status == 401


async def test_offline_token_refresh_and_password_change_revokes(
    origin: OriginUnderTest, tmp_path: Path
) -> None:
    body = await token_for(origin, "bob", offline_token="true")
    refresh = body["refresh_token"]
    resp = await origin.client.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": "quayside",
            "client_id": "test",
            "scope": "repository:team/app:pull,push repository:public/x:pull",
        },
    )
    assert resp.status == 200
    oauth = await resp.json()
    assert oauth["refresh_token"] == refresh
    assert oauth["scope"] == "repository:team/app:pull,push repository:public/x:pull"
    assert claims_of(origin, oauth["access_token"])["sub"] == "bob"
    # the refresh token is no access token
    resp = await origin.client.get("/v2/team/app/tags/list", headers=bearer(refresh))
    assert resp.status == 401
    entries = read_entries(tmp_path / "htpasswd")
    entries["bob"] = hash_password("a-new-password", cost=4)
    write_entries(tmp_path / "htpasswd", entries)
    resp = await origin.client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh, "service": "quayside"},
    )
    assert resp.status == 401


async def test_oauth_password_grant(origin: OriginUnderTest) -> None:
    resp = await origin.client.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": "carol",
            "password": USERS["carol"],
            "service": "quayside",
            "client_id": "docker",
            "access_type": "offline",
            "scope": "repository:team/app:pull,push",
        },
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["scope"] == "repository:team/app:pull" and body["refresh_token"]
    resp = await origin.client.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": "carol",
            "password": "x",
            "service": "quayside",
        },
    )
    assert resp.status == 401
    resp = await origin.client.post("/auth/token", data={"grant_type": "authorization_code"})
    assert resp.status == 400


async def test_jwks_publishes_the_signing_key(origin: OriginUnderTest) -> None:
    token = (await token_for(origin, "alice", "repository:team/app:pull"))["token"]
    jwks = await (await origin.client.get("/auth/jwks.json")).json()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and "x5c" in header
    (key,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    public = jwt.PyJWK(key).key
    claims = jwt.decode(token, public, algorithms=["ES256"], audience="quayside")
    assert claims["access"][0]["name"] == "team/app"
    signing_key = Path(origin.app[ACCESS].config.tokenservice.key)
    assert signing_key.is_relative_to(origin.root)
    assert os.stat(signing_key).st_mode & 0o077 == 0  # private key: owner only


async def test_rs256_and_lifetime_configurable(
    origin_factory: OriginFactory, tmp_path: Path
) -> None:
    origin = await origin_factory(
        overrides=auth_overrides(
            tmp_path, "token", tokenservice={"algorithm": "RS256", "expiration": "90s"}
        )
    )
    body = await token_for(origin, "bob", "repository:team/app:pull,push")
    assert body["expires_in"] == 90
    assert jwt.get_unverified_header(body["token"])["alg"] == "RS256"
    assert (await push_image(origin.client, "team/app", "1", bearer(body["token"])))[0] == 201


async def test_catalog_with_token(origin: OriginUnderTest) -> None:
    alice = (await token_for(origin, "alice", "repository:team/app:pull,push"))["token"]
    assert (await push_image(origin.client, "team/app", "1", bearer(alice)))[0] == 201
    catalog = (await token_for(origin, "carol", "registry:catalog:*"))["token"]
    resp = await origin.client.get("/v2/_catalog", headers=bearer(catalog))
    assert resp.status == 200 and (await resp.json())["repositories"] == ["team/app"]
    anon = (await token_for(origin, None, "registry:catalog:*"))["token"]
    resp = await origin.client.get("/v2/_catalog", headers=bearer(anon))
    assert resp.status == 401
