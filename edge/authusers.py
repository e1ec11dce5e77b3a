"""The edge's own users (``auth.htpasswd``): :class:`EdgeUsers`, HTTP Basic against a bcrypt
htpasswd file, failed sign-ins throttled per client address.

Built by :func:`edge.authsetup.build_access` only when ``auth.htpasswd`` is configured, so an
edge without users never loads bcrypt. Refusals raise regcore.errors: 401 UNAUTHORIZED with
the edge's Basic challenge, 429 TOOMANYREQUESTS with ``Retry-After``, 503 UNAVAILABLE when the
users file became unreadable. Neither password nor hash is ever logged.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import hdrs, web

from regcore import errors
from regcore.auth.authenticator import LoginFailed, parse_basic
from regcore.auth.htpasswd import Htpasswd, HtpasswdError
from regcore.auth.ratelimit import LoginLimiter

__all__ = ["EdgeUsers"]

log = logging.getLogger("quayside.edge.auth")


class EdgeUsers:
    """The edge's own users (``auth.htpasswd``): HTTP Basic, bcrypt, throttled per address."""

    def __init__(self, htpasswd: Htpasswd, realm: str, limiter: LoginLimiter) -> None:
        self.htpasswd = htpasswd
        self.realm = realm
        self.limiter = limiter

    def _refuse(self, message: str) -> errors.RegistryError:
        return errors.Unauthorized(
            message=message, headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'}
        )

    async def authenticate(self, request: web.BaseRequest) -> str:
        """The signed-in user's name. Raises Unauthorized (missing/wrong credentials),
        TooManyRequests (too many failures from this address), Unavailable (the users file
        became unreadable)."""
        header = request.headers.get(hdrs.AUTHORIZATION)
        if not header:
            raise self._refuse("sign in to this edge")
        try:
            basic = parse_basic(header)
        except LoginFailed:
            basic = None
        if basic is None:
            raise self._refuse("this edge accepts Basic credentials of its own users")
        login, password = basic
        address = request.remote or ""
        retry = self.limiter.retry_after(login, address)
        if retry is not None:
            raise errors.TooManyRequests(
                {"retry_after": retry},
                message="too many failed sign-ins",
                headers={"Retry-After": str(retry)},
            )
        try:
            ok = await asyncio.to_thread(self.htpasswd.verify, login, password)
        except (HtpasswdError, OSError):
            log.error("edge users file unreadable", extra={"path": str(self.htpasswd.path)})
            raise errors.Unavailable(message="sign-in is unavailable") from None
        if not ok:
            self.limiter.failed(login, address)
            log.info("edge sign-in failed", extra={"user": login[:64], "client": address})
            raise self._refuse("wrong user name or password")
        self.limiter.succeeded(login, address)
        return login
