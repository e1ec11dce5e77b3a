"""Signed cookies of the web UI: the session and the sign-in form's CSRF token.

A cookie value is ``base64url(JSON payload) "." base64url(HMAC-SHA256(key, purpose "\\0"
payload))``; ``purpose`` (``session`` or ``login``) keeps one kind of cookie from being replayed
as the other. Nothing secret is in a payload (it is readable, only unforgeable): the login
name, a random session id, the CSRF token, issue and expiry times, and a fingerprint of the
user's current credential (SHA-256 of the bcrypt hash or of the robot's stored secret hash), so
that changing a password, removing a user or revoking a robot ends its sessions.

The key: HMAC-SHA256 of ``http.secret`` (distribution's key "used to sign state") when one is
configured, so origins behind one load balancer share sessions; otherwise 32 random bytes in
``<root>/quayside/ui/session.key`` (mode 0600, created once with ``O_EXCL``). A root that cannot
be written (read-only media) gets a key held in memory: sessions then end with the process.

Guarantees: verification is constant-time (:func:`hmac.compare_digest`); an expired, altered,
wrongly-purposed or revoked cookie verifies as ``None`` and never raises. :meth:`SessionSigner.
revoke` (sign-out) remembers the session id until the session would have expired anyway, in
memory only (a restart forgets it; the expiry still bounds the session).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LOGIN_COOKIE",
    "LOGIN_TTL",
    "SESSION_COOKIE",
    "SESSION_TTL",
    "Session",
    "SessionSigner",
    "load_key",
]

log = logging.getLogger("quayside.origin.ui")

SESSION_COOKIE = "quayside_ui"
LOGIN_COOKIE = "quayside_ui_login"
SESSION_TTL = 8 * 3600.0
LOGIN_TTL = 3600.0
KEY_BYTES = 32
_MAX_COOKIE = 4096


@dataclass(frozen=True, slots=True)
class Session:
    """A verified session: who (``login``), its ``sid``, ``csrf`` token, times, credential
    fingerprint ``bind``."""

    login: str
    sid: str
    csrf: str
    issued: float
    expires: float
    bind: str


def load_key(root: str | os.PathLike[str], secret: str | None) -> bytes:
    """The signing key (see the module docstring). Never raises for an unwritable root."""
    if secret:
        return hmac.new(secret.encode(), b"quayside ui session key v1", hashlib.sha256).digest()
    path = Path(root) / "quayside" / "ui" / "session.key"
    try:
        data = path.read_bytes()
        if len(data) >= KEY_BYTES:
            return data[:KEY_BYTES]
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot read the UI session key: %s", exc.strerror)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it meanwhile: use theirs.
        with contextlib.suppress(OSError):
            data = path.read_bytes()
            if len(data) >= KEY_BYTES:
                return data[:KEY_BYTES]
        return key
    except OSError as exc:
        log.warning(
            "cannot store the UI session key (%s): sessions end when the origin stops",
            exc.strerror,
        )
        return key
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signs and verifies the UI's cookies with one key; see the module docstring.

    ``clock`` gives wall-clock seconds. Use from one event loop (the revocation map is
    plain state of this object)."""

    def __init__(
        self,
        key: bytes,
        *,
        clock: Callable[[], float] = time.time,
        ttl: float = SESSION_TTL,
        login_ttl: float = LOGIN_TTL,
    ) -> None:
        if len(key) < 16:
            raise ValueError("session key too short")
        self._key = key
        self._clock = clock
        self.ttl = ttl
        self.login_ttl = login_ttl
        self._revoked: dict[str, float] = {}

    # -- generic signed values ------------------------------------------------------------
    def _mac(self, purpose: str, payload: str) -> bytes:
        return hmac.new(self._key, purpose.encode() + b"\0" + payload.encode(), "sha256").digest()

    def sign(self, purpose: str, doc: dict[str, Any]) -> str:
        payload = _b64(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode())
        return f"{payload}.{_b64(self._mac(purpose, payload))}"

    def unsign(self, purpose: str, value: str | None) -> dict[str, Any] | None:
        """The payload of a value signed for ``purpose`` and not expired; None otherwise."""
        if not value or len(value) > _MAX_COOKIE or value.count(".") != 1:
            return None
        payload, mac = value.split(".")
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._mac(purpose, payload)):
            return None
        try:
            doc = json.loads(_unb64(payload))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(doc, dict):
            return None
        exp = doc.get("exp")
        if not isinstance(exp, int | float) or exp <= self._clock():
            return None
        return doc

    # -- sessions ---------------------------------------------------------------------------
    def new_session(self, login: str, bind: str) -> tuple[Session, str]:
        """A fresh session for ``login`` and its cookie value."""
        now = self._clock()
        session = Session(
            login=login,
            sid=secrets.token_urlsafe(16),
            csrf=secrets.token_urlsafe(24),
            issued=now,
            expires=now + self.ttl,
            bind=bind,
        )
        doc = {
            "v": 1,
            "sub": login,
            "sid": session.sid,
            "csrf": session.csrf,
            "iat": int(now),
            "exp": session.expires,
            "bind": bind,
        }
        return session, self.sign("session", doc)

    def session(self, value: str | None) -> Session | None:
        """The session of a cookie value: None when absent, forged, expired or revoked."""
        doc = self.unsign("session", value)
        if doc is None or doc.get("v") != 1:
            return None
        fields = (doc.get("sub"), doc.get("sid"), doc.get("csrf"), doc.get("bind"))
        if not all(isinstance(f, str) and f for f in fields):
            return None
        if doc["sid"] in self._revoked:
            return None
        return Session(
            login=doc["sub"],
            sid=doc["sid"],
            csrf=doc["csrf"],
            issued=float(doc.get("iat", 0)),
            expires=float(doc["exp"]),
            bind=doc["bind"],
        )

    def revoke(self, session: Session) -> None:
        """Refuse ``session`` from now on (until it would have expired)."""
        now = self._clock()
        self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}
        self._revoked[session.sid] = session.expires

    # -- the sign-in form's CSRF token ---------------------------------------------------------
    def new_login_token(self) -> tuple[str, str]:
        """(token for the form, cookie value binding it)."""
        token = secrets.token_urlsafe(24)
        return token, self.sign("login", {"csrf": token, "exp": self._clock() + self.login_ttl})

    def login_token_ok(self, cookie: str | None, form_token: str | None) -> bool:
        """Whether the form's token is the one the (valid, unexpired) cookie binds."""
        doc = self.unsign("login", cookie)
        if doc is None or not form_token or not isinstance(doc.get("csrf"), str):
            return False
        return hmac.compare_digest(doc["csrf"].encode(), form_token.encode())


def csrf_matches(session: Session, form_token: str | None) -> bool:
    """Whether a form's CSRF token is this session's (constant time)."""
    return bool(form_token) and hmac.compare_digest(
        session.csrf.encode(), (form_token or "").encode()
    )
