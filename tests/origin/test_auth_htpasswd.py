"""The origin in ``auth.htpasswd`` mode, over HTTP: challenges, roles, robots, limits, audit.

Every test runs the real application on a loopback port with a real bcrypt htpasswd file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from origin.access import ACCESS
from tests.origin.authfixtures import USERS, auth_overrides, basic, image, push_image, sha256
from tests.origin.conftest import OriginFactory, OriginUnderTest

ALICE = basic("alice", USERS["alice"])
BOB = basic("bob", USERS["bob"])
CAROL = basic("carol", USERS["carol"])


@pytest.fixture
async def origin(origin_factory: OriginFactory, tmp_path: Path) -> OriginUnderTest:
    return await origin_factory(overrides=auth_overrides(tmp_path))


def audit_events(origin: OriginUnderTest) -> list[dict[str, Any]]:
    path = Path(origin.app[ACCESS].audit.path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def repo_tree(origin: OriginUnderTest) -> list[str]:
    return sorted(
        str(p.relative_to(origin.root)) for p in origin.root.rglob("*") if "docker" in p.parts
    )


async def test_anonymous_base_gets_basic_challenge_like_registry2(origin: OriginUnderTest) -> None:
    resp = await origin.client.get("/v2/")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="qs-test"'
    body = await resp.json()
    assert body["errors"][0]["code"] == "UNAUTHORIZED"
    resp = await origin.client.get("/v2/", headers=ALICE)
    assert resp.status == 200 and await resp.json() == {}


async def test_wrong_password_is_401_with_challenge_and_audited(origin: OriginUnderTest) -> None:
    resp = await origin.client.get("/v2/", headers=basic("alice", "not-her-password"))
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert "not-her-password" not in await resp.text()
    events = [e for e in audit_events(origin) if e["action"] == "login"]
    assert events[-1]["actor"] == "user:alice" and events[-1]["result"] == "failed"
    assert events[-1]["client"] == "127.0.0.1" and events[-1]["request_id"]
    unknown = await origin.client.get("/v2/", headers=basic("mallory", "x"))
    assert unknown.status == 401


async def test_roles_pull_push_delete(origin: OriginUnderTest) -> None:
    status, digest = await push_image(origin.client, "team/app", "1.0", BOB)
    assert status == 201  # developer pushes
    resp = await origin.client.get("/v2/team/app/manifests/1.0", headers=CAROL)
    assert resp.status == 200  # viewer pulls
    resp = await origin.client.delete(f"/v2/team/app/manifests/{digest}", headers=BOB)
    assert resp.status == 403
    assert (await resp.json())["errors"][0]["code"] == "DENIED"
    resp = await origin.client.delete(f"/v2/team/app/manifests/{digest}", headers=ALICE)
    assert resp.status == 202  # admin deletes
    resp = await origin.client.get("/v2/team/app/manifests/1.0", headers=ALICE)
    assert resp.status == 404


async def test_viewer_push_is_403_denied_and_changes_nothing(origin: OriginUnderTest) -> None:
    await push_image(origin.client, "team/app", "1.0", BOB, seed="a")
    before = repo_tree(origin)
    resp = await origin.client.post("/v2/team/app/blobs/uploads/", headers=CAROL)
    assert resp.status == 403
    assert (await resp.json())["errors"][0]["code"] == "DENIED"
    _config, _layer, manifest = image("b")
    resp = await origin.client.put(
        "/v2/team/app/manifests/1.0",
        data=manifest,
        headers={**CAROL, "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert resp.status == 403
    assert repo_tree(origin) == before
    denied = [e for e in audit_events(origin) if e["action"] == "denied"]
    assert {e["actor"] for e in denied} == {"user:carol"}
    assert all(e["result"] == "forbidden" and e["repository"] == "team/app" for e in denied)


async def test_anonymous_gets_401_on_private_and_pulls_public(origin: OriginUnderTest) -> None:
    status, _ = await push_image(origin.client, "public/base", "1", ALICE)
    assert status == 201
    assert (await origin.client.get("/v2/public/base/manifests/1")).status == 200
    assert (await origin.client.get("/v2/public/base/tags/list")).status == 200
    resp = await origin.client.post("/v2/public/base/blobs/uploads/")
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == 'Basic realm="qs-test"'
    resp = await origin.client.get("/v2/team/app/tags/list")
    assert resp.status == 401
    detail = (await resp.json())["errors"][0]["detail"]
    assert detail == [{"Type": "repository", "Name": "team/app", "Action": "pull"}]
    # A signed-in user outside every rule is refused, not challenged.
    resp = await origin.client.get("/v2/other/x/tags/list", headers=BOB)
    assert resp.status == 403


async def test_catalog_and_tags_show_only_pullable(origin: OriginUnderTest) -> None:
    for repo in ("team/app", "public/base"):
        assert (await push_image(origin.client, repo, "1", ALICE))[0] == 201
    assert (await push_image(origin.client, "secret/vault", "1", ALICE))[0] == 403  # no rule
    resp = await origin.client.get("/v2/_catalog", headers=ALICE)
    assert (await resp.json())["repositories"] == ["public/base", "team/app"]
    assert (await origin.client.get("/v2/_catalog")).status == 401


async def test_catalog_filters_by_role(origin_factory: OriginFactory, tmp_path: Path) -> None:
    overrides = auth_overrides(tmp_path)
    overrides["quayside.auth"]["access"] = [
        {"repository": "a/*", "users": {"alice": "admin", "bob": "viewer"}},
        {"repository": "b/*", "users": {"alice": "admin"}},
    ]
    origin = await origin_factory(overrides=overrides)
    for repo in ("a/one", "b/two"):
        assert (await push_image(origin.client, repo, "1", ALICE))[0] == 201
    resp = await origin.client.get("/v2/_catalog", headers=BOB)
    assert (await resp.json())["repositories"] == ["a/one"]
    assert (await origin.client.get("/v2/b/two/tags/list", headers=BOB)).status == 403
    assert (await origin.client.get("/v2/a/one/tags/list", headers=BOB)).status == 200


async def test_robot_inside_pattern_outside_expired_revoked(origin: OriginUnderTest) -> None:
    robots = origin.app[ACCESS].robots
    _robot, secret = robots.create("ci", ["team/*"], push=True, ttl=3600)
    ci = basic("robot$ci", secret)
    status, digest = await push_image(origin.client, "team/app", "ci-1", ci)
    assert status == 201
    assert (await origin.client.get(f"/v2/team/app/manifests/{digest}", headers=ci)).status == 200
    status, _ = await push_image(origin.client, "public/base", "ci", ci)
    assert status == 403  # outside its pattern
    assert (
        await origin.client.delete(f"/v2/team/app/manifests/{digest}", headers=ci)
    ).status == 403
    robots.revoke("ci")
    resp = await origin.client.get("/v2/team/app/tags/list", headers=ci)
    assert resp.status == 401
    _r, old = robots.create("old", ["team/*"], push=True, ttl=-1)  # already expired
    resp = await origin.client.get("/v2/team/app/tags/list", headers=basic("robot$old", old))
    assert resp.status == 401
    reasons = [e.get("reason") for e in audit_events(origin) if e["result"] == "failed"]
    assert "robot revoked" in reasons and "robot expired" in reasons
    pushes = [e for e in audit_events(origin) if e["action"] == "push"]
    assert pushes and {e["actor"] for e in pushes} == {"robot:ci"}


async def test_pull_only_robot_cannot_push(origin: OriginUnderTest) -> None:
    _robot, secret = origin.app[ACCESS].robots.create("reader", ["team/*"])
    status, _ = await push_image(origin.client, "team/app", "1", basic("robot$reader", secret))
    assert status == 403


async def test_brute_force_429_and_owner_from_other_address_still_logs_in(
    origin: OriginUnderTest,
) -> None:
    limit = origin.app[ACCESS].config.limits.failures_per_user
    for _ in range(limit):
        resp = await origin.client.get("/v2/", headers=basic("alice", "guess"))
        assert resp.status == 401
    resp = await origin.client.get("/v2/", headers=basic("alice", "guess"))
    assert resp.status == 429
    assert (await resp.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert 1 <= int(resp.headers["Retry-After"]) <= 300
    # Even the right password is refused from the guessing address while blocked...
    assert (await origin.client.get("/v2/", headers=ALICE)).status == 429
    # ...but other users from there and alice from elsewhere are not blocked.
    assert (await origin.client.get("/v2/", headers=BOB)).status == 200
    limiter = origin.app[ACCESS].authenticator.limiter
    assert limiter.retry_after("alice", "127.0.0.2") is None
    throttled = [e for e in audit_events(origin) if e["result"] == "throttled"]
    assert throttled and throttled[0]["action"] == "login"


async def test_audit_lines_for_push_tag_move_pull_delete(origin: OriginUnderTest) -> None:
    _, first = await push_image(origin.client, "team/app", "1.0", ALICE, seed="one")
    _, second = await push_image(origin.client, "team/app", "1.0", ALICE, seed="two")
    assert (await origin.client.get("/v2/team/app/manifests/1.0", headers=BOB)).status == 200
    resp = await origin.client.delete(f"/v2/team/app/manifests/{first}", headers=ALICE)
    assert resp.status == 202
    events = audit_events(origin)
    tags = [e for e in events if e["action"] == "tag"]
    assert [(e["from"], e["to"]) for e in tags] == [(None, first), (first, second)]
    blob_pushes = [e for e in events if e["action"] == "push" and e["reference"] is None]
    assert {e["digest"] for e in blob_pushes} >= {sha256(image("one")[1])}
    pull = next(e for e in events if e["action"] == "pull")
    assert pull == {**pull, "actor": "user:bob", "repository": "team/app", "reference": "1.0"}
    assert pull["digest"] == second
    delete = next(e for e in events if e["action"] == "delete")
    assert delete["reference"] == first and delete["actor"] == "user:alice"
    for e in events:
        assert set(e) >= {"time", "actor", "client", "action", "repository", "result"}
    text = json.dumps(events)
    for password in USERS.values():
        assert password not in text


async def test_unauthorized_mount_falls_back_to_plain_upload(origin: OriginUnderTest) -> None:
    _config, layer, _ = image("m")
    status, _ = await push_image(origin.client, "team/app", "1", ALICE, seed="m")
    assert status == 201
    resp = await origin.client.post(
        "/v2/public/mine/blobs/uploads/",
        params={"mount": sha256(layer), "from": "team/app"},
        headers=basic("robot$x", "nope"),
    )
    assert resp.status == 401
    robots = origin.app[ACCESS].robots
    _r, secret = robots.create("pub", ["public/*"], push=True)
    resp = await origin.client.post(
        "/v2/public/mine/blobs/uploads/",
        params={"mount": sha256(layer), "from": "team/app"},
        headers=basic("robot$pub", secret),
    )
    assert resp.status == 202  # a new session, not a mount of a blob it may not read
    head = await origin.client.head(
        f"/v2/public/mine/blobs/{sha256(layer)}", headers=basic("robot$pub", secret)
    )
    assert head.status == 404


async def test_allow_list_blocks_push_from_outside_range(
    origin_factory: OriginFactory, tmp_path: Path
) -> None:
    origin = await origin_factory(
        overrides=auth_overrides(tmp_path, allow={"push": ["10.0.0.0/8"]})
    )
    status, _ = await push_image(origin.client, "team/app", "1", ALICE)
    assert status == 403
    assert (await origin.client.get("/v2/team/app/tags/list", headers=ALICE)).status == 404


async def test_forwarded_for_believed_only_from_trusted_proxy(
    origin_factory: OriginFactory, tmp_path: Path
) -> None:
    trusted = await origin_factory(
        root=tmp_path / "r1",
        overrides=auth_overrides(
            tmp_path, allow={"push": ["10.1.0.0/16"]}, trustedproxies=["127.0.0.1"]
        ),
    )
    fwd = {**ALICE, "X-Forwarded-For": "203.0.113.9, 10.1.2.3"}
    assert (await push_image(trusted.client, "team/app", "1", fwd))[0] == 201
    spoofed = {**ALICE, "X-Forwarded-For": "10.1.2.3, 203.0.113.9"}
    assert (await push_image(trusted.client, "team/app", "2", spoofed))[0] == 403
    untrusted = await origin_factory(
        root=tmp_path / "r2",
        overrides=auth_overrides(tmp_path, allow={"push": ["10.1.0.0/16"]}),
    )
    assert (await push_image(untrusted.client, "team/app", "1", fwd))[0] == 403
