"""Who is looking at the UI and what they may see: the same authorizer as the API.

:class:`UiAccess` turns a request into a :class:`Viewer`: with authentication off, an anonymous
principal that may see everything (the API is open too); with it on, the user of a valid
session cookie, else anonymous (who sees what anonymous may pull, as through the API).
A session is valid only while the credential it was issued for is unchanged: the fingerprint
bound into the cookie is recomputed on each request (a password change, a removed user or a
revoked or expired robot ends the session).

Decisions (never an ``if`` of the UI's own): a repository is shown when the authorizer lets the
principal ``pull`` it; its audit trail when the principal may do every action there (the
``admin`` role; with authentication off, anyone, as anyone may delete through the API).

:meth:`UiAccess.sign_in` checks a password exactly as HTTP Basic does (throttled per login and
address, bcrypt in a thread, robots as ``robot$NAME``) and writes the same ``login`` audit lines
(with reason ``web ui``). Raises :class:`~regcore.auth.authenticator.LoginFailed` and
:class:`~regcore.auth.authenticator.LoginThrottled`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

from origin.access import AccessControl
from origin.ui.session import SESSION_COOKIE, Session, SessionSigner
from regcore.auth.authenticator import LoginFailed, LoginThrottled
from regcore.auth.authorizer import ACTIONS
from regcore.auth.principal import Principal

__all__ = ["UiAccess", "Viewer"]

_ALL = frozenset(ACTIONS)


@dataclass(frozen=True, slots=True)
class Viewer:
    principal: Principal
    session: Session | None
    auth_enabled: bool

    @property
    def signed_in(self) -> bool:
        return self.session is not None

    @property
    def name(self) -> str:
        return self.principal.login or "anonymous"


class UiAccess:
    """See the module docstring. ``access`` is the origin's :class:`AccessControl`."""

    def __init__(
        self,
        access: AccessControl,
        signer: SessionSigner,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.access = access
        self.signer = signer
        self._clock = clock

    @property
    def auth_enabled(self) -> bool:
        return self.access.authenticator.enabled

    def address(self, request: web.BaseRequest) -> str:
        return self.access.client_address(request)

    def binding(self, principal: Principal) -> str | None:
        """Fingerprint of the principal's current credential; None when it has none now."""
        ac = self.access
        secret: str | None = None
        if principal.kind == "robot":
            robot = ac.robots.get(principal.name)
            if robot is not None and robot.state(self._clock()) == "active":
                secret = robot.secret_sha256
        elif principal.kind == "user" and ac.users is not None:
            try:
                secret = ac.users.load().get(principal.name)
            except (OSError, ValueError):
                secret = None
        if not secret:
            return None
        return hashlib.sha256(b"quayside ui\0" + secret.encode()).hexdigest()[:32]

    def viewer(self, request: web.BaseRequest) -> Viewer:
        """The viewer of ``request`` (see the module docstring). Never raises."""
        address = self.address(request)
        if not self.auth_enabled:
            return Viewer(Principal("anonymous", "", address), None, False)
        session = self.signer.session(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            principal = Principal.from_login(session.login, address)
            bound = self.binding(principal)
            if bound is not None and bound == session.bind and not principal.anonymous:
                return Viewer(principal, session, True)
        return Viewer(Principal("anonymous", "", address), None, True)

    # -- decisions ------------------------------------------------------------------------------
    def visible(self, viewer: Viewer, names: Iterable[str]) -> list[str]:
        return self.access.authorizer.visible(viewer.principal, names)

    def may_pull(self, viewer: Viewer, name: str) -> bool:
        return self.access.authorizer.allowed(viewer.principal, "pull", name)

    def is_admin(self, viewer: Viewer, name: str) -> bool:
        return self.access.authorizer.actions(viewer.principal, name) >= _ALL

    # -- signing in -------------------------------------------------------------------------------
    async def sign_in(self, request: web.BaseRequest, login: str, password: str) -> str:
        """Check ``login``/``password``; returns the new session's cookie value."""
        ac = self.access
        address = self.address(request)
        request_id = ac.request_id(request)
        who = Principal.from_login(login, address)
        try:
            principal = await ac.authenticator.password_login(login, password, address)
        except LoginThrottled:
            ac.audit.record(
                "login",
                actor=who.actor,
                client=address,
                result="throttled",
                request_id=request_id,
                reason="too many failed logins (web ui)",
            )
            raise
        except LoginFailed as exc:
            ac.audit.record(
                "login",
                actor=who.actor,
                client=address,
                result="failed",
                request_id=request_id,
                reason=f"{exc.reason} (web ui)",
            )
            raise
        bound = self.binding(principal)
        if bound is None:  # the credential vanished between the check and now
            raise LoginFailed(login, "credential changed")
        ac.audit.record(
            "login", actor=principal.actor, client=address, request_id=request_id, reason="web ui"
        )
        _, cookie = self.signer.new_session(principal.login, bound)
        return cookie

    def sign_out(self, viewer: Viewer) -> None:
        if viewer.session is not None:
            self.signer.revoke(viewer.session)
