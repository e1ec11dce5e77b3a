"""Signing in to the web UI, over HTTP against the real origin: sessions, CSRF, throttling.

Every test runs ``create_app`` on a loopback port with a bcrypt htpasswd file and the access
rules of :mod:`tests.ui.content`; content is pushed through the registry API.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from origin.ui.session import LOGIN_COOKIE, SESSION_COOKIE
from regcore.auth.robots import RobotStore
from tests.ui.conftest import UiOrigin, UiOriginFactory, write_users
from tests.ui.content import USERS


def audit_lines(origin: UiOrigin) -> list[dict[str, Any]]:
    path = origin.audit_path
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def set_cookie_headers(resp: Any, name: str) -> list[str]:
    return [h for h in resp.headers.getall("Set-Cookie", []) if h.startswith(f"{name}=")]


def payload_of(cookie: str) -> dict[str, Any]:
    part = cookie.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


async def test_anonymous_viewers_see_public_repositories_and_are_sent_to_sign_in_for_others(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin()
    v = origin.browser()
    resp, body = await v.get("/ui/")
    assert resp.status == 200
    assert "public/base" in body
    assert "team/app" not in body and "other/secret" not in body
    assert 'href="/ui/login?next=/ui/"' in body
    assert origin.published is not None
    digest = origin.published.app_digest
    for path in (
        "/ui/r/team/app/",
        "/ui/r/team/app/-/tags/1.0",
        f"/ui/r/team/app/-/manifests/{digest}",
        "/ui/r/team/app/-/audit",
        "/ui/r/no/such/",  # refused before existence is looked at: tells nothing
    ):
        resp, _ = await v.get(path)
        assert resp.status == 303, path
        assert resp.headers["Location"].startswith("/ui/login?next=/ui/r/"), path
    resp, body = await v.get("/ui/r/public/base/-/tags/latest")
    assert resp.status == 200 and origin.published.public_digest in body


async def test_sign_in_sets_a_signed_httponly_samesite_strict_session_and_is_audited(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin()
    v = origin.browser()
    resp, _ = await v.sign_in("alice", next_path="/ui/r/team/app/")
    assert resp.status == 303
    assert resp.headers["Location"] == "/ui/r/team/app/"
    (header,) = set_cookie_headers(resp, SESSION_COOKIE)
    attrs = [a.strip().lower() for a in header.split(";")]
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/ui/" in attrs
    assert "secure" not in attrs  # plain HTTP: a Secure cookie would never come back
    cookie = v.cookie(SESSION_COOKIE)
    assert cookie is not None
    doc = payload_of(cookie)
    assert doc["sub"] == "alice" and doc["exp"] > doc["iat"]
    assert USERS["alice"] not in cookie and USERS["alice"] not in json.dumps(doc)
    resp, body = await v.get("/ui/")
    assert resp.status == 200
    assert "Signed in as <strong>alice</strong>" in body and "team/app" in body
    logins = [e for e in audit_lines(origin) if e["action"] == "login"]
    assert logins[-1]["actor"] == "user:alice" and logins[-1]["result"] == "ok"
    assert logins[-1]["reason"] == "web ui" and logins[-1]["client"] == "127.0.0.1"


async def test_wrong_password_shows_the_form_again_without_a_session_and_is_audited(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin()
    v = origin.browser()
    for user, password in (("alice", "not-her-password"), ("mallory", "whatever-pw")):
        resp, body = await v.sign_in(user, password)
        assert resp.status == 200, body
        assert "Wrong user name or password." in body
        assert password not in body
        assert not set_cookie_headers(resp, SESSION_COOKIE)
        assert 'name="csrf"' in body  # a fresh form to try again
    assert v.cookie(SESSION_COOKIE) is None
    failed = [e for e in audit_lines(origin) if e["action"] == "login"]
    assert [(e["actor"], e["result"]) for e in failed] == [
        ("user:alice", "failed"),
        ("user:mallory", "failed"),
    ]
    assert all("web ui" in e["reason"] for e in failed)


async def test_sign_in_without_the_forms_csrf_token_or_from_another_site_is_refused(
    ui_origin: UiOriginFactory, tmp_path: Path
) -> None:
    origin = await ui_origin(content=False)
    good = {"username": "alice", "password": USERS["alice"], "next": "/ui/"}

    fresh = origin.browser()  # no login cookie at all (a cross-site form post)
    resp, body = await fresh.post("/ui/login", {**good, "csrf": "guessed"})
    assert resp.status == 403 and "did not come from this page" in body

    v = origin.browser()
    token = await v.login_token()
    resp, _ = await v.post("/ui/login", dict(good))  # token missing from the form
    assert resp.status == 403
    resp, _ = await v.post("/ui/login", {**good, "csrf": token + "x"})
    assert resp.status == 403

    other = origin.browser()  # a token from another visitor's form does not fit this cookie
    foreign_token = await other.login_token()
    await v.login_token()
    resp, _ = await v.post("/ui/login", {**good, "csrf": foreign_token})
    assert resp.status == 403

    token = await v.login_token()
    resp, _ = await v.post(
        "/ui/login", {**good, "csrf": token}, headers={"Origin": "http://evil.example"}
    )
    assert resp.status == 403

    tampered = origin.browser()
    token = await tampered.login_token()
    value = tampered.cookie(LOGIN_COOKIE)
    assert value is not None
    tampered.session.cookie_jar.clear()
    tampered.session.cookie_jar.update_cookies({LOGIN_COOKIE: value[:-3] + "AAA"})
    resp, _ = await tampered.post("/ui/login", {**good, "csrf": token})
    assert resp.status == 403

    assert all(vis.cookie(SESSION_COOKIE) is None for vis in (fresh, v, other, tampered))
    # Refused before the password was looked at: no login attempt in the audit trail.
    assert not [e for e in audit_lines(origin) if e["action"] == "login"]
    token = await v.login_token()
    resp, _ = await v.post("/ui/login", {**good, "csrf": token})
    assert resp.status == 303 and v.cookie(SESSION_COOKIE)


async def test_altered_or_foreign_session_cookies_count_as_signed_out(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin()
    carol = origin.browser()
    await carol.sign_in("carol")
    cookie = carol.cookie(SESSION_COOKIE)
    assert cookie is not None
    payload, mac = cookie.split(".")
    doc = payload_of(cookie)
    doc["sub"] = "alice"
    forged = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode() + "." + mac
    other = await ui_origin(content=False)  # another root: another key
    elsewhere = other.browser()
    await elsewhere.sign_in("alice")
    foreign = elsewhere.cookie(SESSION_COOKIE)
    assert foreign is not None
    for value in (forged, foreign, payload + ".", "garbage", payload):
        v = origin.browser()
        v.session.cookie_jar.update_cookies({SESSION_COOKIE: value})
        resp, body = await v.get("/ui/r/team/app/-/audit")
        assert resp.status == 303, value
        resp, body = await v.get("/ui/")
        assert "Signed in as" not in body and "team/app" not in body


async def test_sign_out_needs_the_sessions_csrf_token_and_ends_the_session_for_good(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin(content=False)
    v = origin.browser()
    await v.sign_in("alice")
    cookie = v.cookie(SESSION_COOKIE)
    assert cookie is not None
    resp, body = await v.post("/ui/logout", {"csrf": "wrong"})
    assert resp.status == 403
    resp, body = await v.get("/ui/")
    assert "Signed in as <strong>alice</strong>" in body
    csrf = payload_of(cookie)["csrf"]
    assert f'name="csrf" value="{csrf}"' in body  # the sign-out form carries it
    resp, _ = await v.post("/ui/logout", {"csrf": csrf})
    assert resp.status == 303 and resp.headers["Location"] == "/ui/login"
    assert v.cookie(SESSION_COOKIE) in (None, "")
    replay = origin.browser()  # someone who kept a copy of the cookie
    replay.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie})
    resp, body = await replay.get("/ui/")
    assert "Signed in as" not in body


async def test_a_password_change_or_removed_user_ends_existing_sessions(
    ui_origin: UiOriginFactory, tmp_path: Path
) -> None:
    origin = await ui_origin(content=False)
    bob, carol = origin.browser(), origin.browser()
    await bob.sign_in("bob")
    await carol.sign_in("carol")
    for v, who in ((bob, "bob"), (carol, "carol")):
        _, body = await v.get("/ui/")
        assert f"Signed in as <strong>{who}</strong>" in body
    users = {k: p for k, p in USERS.items() if k != "carol"}
    users["bob"] = "a-new-password-for-bob"
    write_users(tmp_path / "htpasswd-0", users)
    for v in (bob, carol):
        _, body = await v.get("/ui/")
        assert "Signed in as" not in body
    resp, _ = await bob.sign_in("bob", "a-new-password-for-bob")
    assert resp.status == 303


async def test_repeated_wrong_passwords_are_throttled_with_429_and_retry_after(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin(
        content=False, overrides={"quayside.auth.limits": {"failures_per_user": 3}}
    )
    v = origin.browser()
    for _ in range(3):
        resp, body = await v.sign_in("bob", "wrong-password")
        assert resp.status == 200 and "Wrong user name or password." in body
    resp, body = await v.sign_in("bob")  # right password, but blocked now
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert "Too many failed sign-ins" in body
    assert v.cookie(SESSION_COOKIE) is None
    results = [e["result"] for e in audit_lines(origin) if e["action"] == "login"]
    assert results == ["failed", "failed", "failed", "throttled"]


async def test_the_page_after_sign_in_is_always_inside_the_ui(
    ui_origin: UiOriginFactory,
) -> None:
    origin = await ui_origin(content=False)
    for target, expected in (
        ("https://evil.example/", "/ui/"),
        ("//evil.example/ui/", "/ui/"),
        ("/v2/_catalog", "/ui/"),
        ("/ui/\\evil", "/ui/"),
        ("/ui/r/team/app/", "/ui/r/team/app/"),
    ):
        v = origin.browser()
        resp, _ = await v.sign_in("alice", next_path=target)
        assert resp.status == 303
        assert resp.headers["Location"] == expected, target


async def test_cookies_are_secure_behind_a_trusted_tls_proxy(ui_origin: UiOriginFactory) -> None:
    origin = await ui_origin(
        content=False, overrides={"quayside.auth.trustedproxies": ["127.0.0.1"]}
    )
    v = origin.browser()
    token = await v.login_token()
    form = {"username": "alice", "password": USERS["alice"], "csrf": token, "next": "/ui/"}
    resp, _ = await v.post("/ui/login", form, headers={"X-Forwarded-Proto": "https"})
    assert resp.status == 303
    (header,) = set_cookie_headers(resp, SESSION_COOKIE)
    assert "secure" in [a.strip().lower() for a in header.split(";")]


async def test_a_robot_signs_in_and_its_session_ends_when_it_is_revoked(
    ui_origin: UiOriginFactory, tmp_path: Path
) -> None:
    origin = await ui_origin()
    store = RobotStore(origin.root / "quayside" / "robots.json")
    _, secret = store.create("ci", ["team/*"])
    v = origin.browser()
    resp, _ = await v.sign_in("robot$ci", secret)
    assert resp.status == 303
    _, body = await v.get("/ui/")
    assert "team/app" in body and "public/base" not in body  # its patterns only
    resp, _ = await v.get("/ui/r/team/app/-/audit")
    assert resp.status == 403  # robots never delete: not admins
    store.revoke("ci")
    resp, _ = await v.get("/ui/r/team/app/")
    assert resp.status == 303


async def test_behind_a_proxy_the_public_host_counts_as_this_site_only_from_trusted_proxies(
    ui_origin: UiOriginFactory,
) -> None:
    public = {"Origin": "https://registry.example", "X-Forwarded-Host": "registry.example"}
    for overrides, status in (
        ({}, 403),  # X-Forwarded-Host from an untrusted peer is not believed
        ({"quayside.auth.trustedproxies": ["127.0.0.1"]}, 303),
        ({"http.host": "https://registry.example"}, 303),  # the configured external URL
    ):
        origin = await ui_origin(content=False, overrides=overrides)
        v = origin.browser()
        token = await v.login_token()
        form = {"username": "alice", "password": USERS["alice"], "csrf": token, "next": "/ui/"}
        headers = public if "http.host" not in overrides else {"Origin": public["Origin"]}
        resp, _ = await v.post("/ui/login", form, headers=headers)
        assert resp.status == status, overrides
