"""The UI's signed cookies and key file, and the accessibility checks the page tests rely on
(a check that cannot fail proves nothing, so each is shown failing on a bad page)."""

from __future__ import annotations

import os
from pathlib import Path

from origin.ui.session import KEY_BYTES, SessionSigner, csrf_matches, load_key
from tests.ui.a11y import contrast_ratio, css_pair_problems, page_problems


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_key_file_is_created_once_with_mode_0600_and_http_secret_replaces_it(
    tmp_path: Path,
) -> None:
    key = load_key(tmp_path, None)
    path = tmp_path / "quayside" / "ui" / "session.key"
    assert len(key) == KEY_BYTES and path.read_bytes() == key
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key(tmp_path, None) == key  # reused: sessions survive a restart
    from_secret = load_key(tmp_path / "other", "a shared http.secret")
    assert from_secret == load_key(tmp_path / "third", "a shared http.secret") != key
    assert not (tmp_path / "other" / "quayside").exists()


def test_an_unwritable_root_gets_a_key_in_memory(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    os.chmod(root, 0o500)
    try:
        if os.access(root, os.W_OK):  # running as root: permissions do not bind
            return
        assert len(load_key(root, None)) == KEY_BYTES
    finally:
        os.chmod(root, 0o700)


def test_sessions_verify_only_unaltered_unexpired_unrevoked_and_for_their_purpose() -> None:
    clock = Clock()
    signer = SessionSigner(b"k" * 32, clock=clock, ttl=100.0)
    session, cookie = signer.new_session("alice", "bind-1")
    assert signer.session(cookie) == session
    assert csrf_matches(session, session.csrf) and not csrf_matches(session, "x")
    assert signer.session(cookie.replace(".", "x.", 1)) is None
    assert SessionSigner(b"j" * 32, clock=clock).session(cookie) is None  # another key
    assert signer.unsign("login", cookie) is None  # a session is not a login token
    token, login_cookie = signer.new_login_token()
    assert signer.login_token_ok(login_cookie, token)
    assert signer.session(login_cookie) is None  # and a login token is not a session
    clock.now += 101.0
    assert signer.session(cookie) is None
    clock.now -= 101.0
    signer.revoke(session)
    assert signer.session(cookie) is None
    other, other_cookie = signer.new_session("bob", "bind-2")
    assert signer.session(other_cookie) == other


def test_the_page_checks_catch_what_they_claim_to() -> None:
    good = (
        '<!doctype html><html lang="en"><head><title>t</title></head><body>'
        '<h1>A</h1><h2>B</h2><h3>C</h3><h2>D</h2><form><label for="u">User</label>'
        '<input id="u" name="u"><input type="hidden" name="h"><label>Pw <input name="p" '
        'type="password"></label><button>Go</button></form><img src="x.png" alt=""></body></html>'
    )
    assert page_problems(good) == []
    bad = {
        "no lang": good.replace(' lang="en"', ""),
        "two h1": good.replace("<h2>D</h2>", "<h1>D</h1>"),
        "skipped": good.replace("<h2>B</h2><h3>C</h3>", "<h3>C</h3>"),
        "unlabelled": good.replace('<label for="u">User</label>', ""),
        "no alt": good.replace(' alt=""', ""),
        "empty button": good.replace("<button>Go</button>", "<button></button>"),
        "no title": good.replace("<title>t</title>", ""),
        "dup id": good.replace('name="p"', 'name="p" id="u"'),
    }
    for name, html in bad.items():
        assert page_problems(html), name


def test_contrast_is_computed_as_wcag_defines_it() -> None:
    assert round(contrast_ratio("#000", "#fff"), 1) == 21.0
    assert round(contrast_ratio("#777777", "#ffffff"), 2) == 4.48  # the classic near-miss
    assert contrast_ratio("rgb(87, 96, 106)", "rgba(255, 255, 255, 1)") > 4.5
    assert css_pair_problems(".a { color: #777; background-color: #fff; }")
    assert not css_pair_problems(".a { color: #57606a; background-color: #ffffff; }")
