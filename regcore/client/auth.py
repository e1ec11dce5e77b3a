"""Upstream authentication pieces: challenges, scopes, where credentials may go, token cache.

* :func:`parse_challenges` reads ``WWW-Authenticate`` (RFC 7235 auth-params, quoted strings
  with backslash escapes, several challenges in one header or in several headers).
* :func:`repository_scope` / :func:`scopes_for_path` build the Docker token scopes a request
  needs (``repository:<name>:pull`` for reads, ``pull,push`` for writes, ``delete`` for
  deletes, ``registry:catalog:*`` for the catalog).
* :func:`may_send_credentials` decides whether upstream credentials may be sent to a token
  realm: same host (any port) for IP literals and ``localhost``, same registrable domain
  (last two DNS labels) otherwise, and never from an ``https`` upstream to an ``http`` realm.
  The last-two-labels rule does not know public suffixes such as ``co.uk``.
* :class:`TokenCache` keeps bearer tokens per (upstream, realm, service, scopes) until
  shortly before they expire, bounded in entries. Not thread-safe; one event loop.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

TOKEN_DEFAULT_EXPIRES_IN = 60  # the Docker token spec's default (and minimum) lifetime
_MAX_EXPIRY_MARGIN = 30.0


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: lower-cased scheme and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        """The challenge's ``scope`` split on spaces (some servers list several)."""
        return tuple(s for s in self.params.get("scope", "").split(" ") if s)


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Parse every challenge in the given ``WWW-Authenticate`` header values.

    Malformed input never raises: what cannot be parsed is skipped.
    """
    out: list[Challenge] = []
    for value in values:
        out.extend(_parse_one_header(value))
    return out


def _parse_one_header(text: str) -> list[Challenge]:
    out: list[Challenge] = []
    i, n = 0, len(text)
    current: Challenge | None = None
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        start = i
        while i < n and text[i] not in " \t,=":
            i += 1
        token = text[start:i]
        if not token:
            i += 1
            continue
        j = i
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] == "=" and current is not None:
            # key=value (token68 values such as "abc==" are not used by registries)
            i = j + 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] == '"':
                value, i = _quoted(text, i + 1)
            else:
                vstart = i
                while i < n and text[i] not in ",":
                    i += 1
                value = text[vstart:i].strip()
            current.params[token.lower()] = value
        else:
            current = Challenge(token.lower(), {})
            out.append(current)
            i = j
    return out


def _quoted(text: str, i: int) -> tuple[str, int]:
    buf: list[str] = []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            buf.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(buf), i + 1
        buf.append(ch)
        i += 1
    return "".join(buf), i


def repository_scope(name: str, actions: Sequence[str] = ("pull",)) -> str:
    """``repository:<name>:<actions>`` as the Docker token spec writes it."""
    return f"repository:{name}:{','.join(actions)}"


_READ_METHODS = frozenset({"GET", "HEAD"})


def scopes_for_path(method: str, path: str) -> tuple[str, ...]:
    """The scopes a request for ``/v2/...`` needs; ``()`` for ``/v2/`` and unknown paths."""
    if not path.startswith("/v2/"):
        return ()
    rest = path[len("/v2/") :]
    if rest.rstrip("/") == "_catalog":
        return ("registry:catalog:*",)
    for marker in ("/manifests/", "/blobs/", "/tags/", "/referrers/"):
        idx = rest.rfind(marker)
        if idx > 0:
            name = rest[:idx]
            break
    else:
        return ()
    method = method.upper()
    if method in _READ_METHODS:
        actions: tuple[str, ...] = ("pull",)
    elif method == "DELETE":
        actions = ("delete",)
    else:
        actions = ("pull", "push")
    return (repository_scope(name, actions),)


def merge_scopes(*groups: Iterable[str]) -> tuple[str, ...]:
    """Union of scopes, actions of the same resource merged, in a stable order."""
    merged: dict[tuple[str, str], list[str]] = {}
    for group in groups:
        for scope in group:
            kind, _, rest = scope.partition(":")
            name, sep, actions = rest.rpartition(":")
            if not sep or not kind:
                continue
            acts = merged.setdefault((kind, name), [])
            for act in actions.split(","):
                if act and act not in acts:
                    acts.append(act)
    return tuple(f"{k}:{n}:{','.join(a)}" for (k, n), a in merged.items())


def _is_ip_or_local(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def registrable_domain(host: str) -> str:
    """The last two DNS labels of ``host`` (the host itself for IPs and ``localhost``)."""
    host = host.lower().rstrip(".")
    if _is_ip_or_local(host):
        return host
    labels = host.split(".")
    return ".".join(labels[-2:])


def may_send_credentials(upstream: URL, realm: URL) -> bool:
    """Whether upstream credentials may be sent to ``realm`` (see the module docstring)."""
    if not realm.is_absolute() or realm.host is None or upstream.host is None:
        return False
    if upstream.scheme == "https" and realm.scheme != "https":
        return False
    up, rh = upstream.host.lower().rstrip("."), realm.host.lower().rstrip(".")
    if up == rh:
        return True
    if _is_ip_or_local(up) or _is_ip_or_local(rh):
        return False
    return registrable_domain(up) == registrable_domain(rh)


def same_origin(a: URL, b: URL) -> bool:
    """Same scheme, host and (effective) port."""
    return (
        a.scheme == b.scheme
        and (a.host or "").lower() == (b.host or "").lower()
        and a.port == b.port
    )


@dataclass(frozen=True, slots=True)
class CachedToken:
    token: str
    usable_until: float


def token_from_response(doc: Any) -> tuple[str, int] | None:
    """``(token, expires_in)`` from a token endpoint's JSON, or ``None`` if it has no token.

    ``token`` wins over ``access_token``; ``expires_in`` below 60 s (or absent/garbage) is
    taken as 60 s, as the spec tells clients to.
    """
    if not isinstance(doc, dict):
        return None
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        return None
    raw = doc.get("expires_in")
    try:
        expires_in = int(raw) if raw is not None else TOKEN_DEFAULT_EXPIRES_IN
    except (TypeError, ValueError):
        expires_in = TOKEN_DEFAULT_EXPIRES_IN
    return token, max(expires_in, TOKEN_DEFAULT_EXPIRES_IN)


class TokenCache:
    """Bearer tokens keyed by ``(upstream, realm, service, scopes)``.

    A token is served until ``expires_in - margin`` seconds after it was stored, where the
    margin is 20 % of its lifetime capped at 30 s, so a request never leaves with a token
    about to expire. At most ``max_entries`` tokens are kept (expired first, then oldest out).
    """

    def __init__(
        self, *, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: dict[tuple[str, ...], CachedToken] = {}
        self._max = max_entries
        self._clock = clock

    def get(self, key: tuple[str, ...]) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.usable_until <= self._clock():
            del self._entries[key]
            return None
        return entry.token

    def put(self, key: tuple[str, ...], token: str, expires_in: float) -> None:
        margin = min(_MAX_EXPIRY_MARGIN, expires_in * 0.2)
        self._entries.pop(key, None)
        if len(self._entries) >= self._max:
            self._purge()
        self._entries[key] = CachedToken(token, self._clock() + expires_in - margin)

    def alias(self, src: tuple[str, ...], dst: tuple[str, ...]) -> None:
        """Make ``dst`` serve ``src``'s token (same expiry); no-op if ``src`` is not cached."""
        entry = self._entries.get(src)
        if entry is not None and src != dst:
            self._entries.pop(dst, None)
            self._entries[dst] = entry

    def invalidate(self, key: tuple[str, ...], token: str | None = None) -> None:
        """Forget ``key`` (only if it still holds ``token``, when given)."""
        entry = self._entries.get(key)
        if entry is not None and (token is None or entry.token == token):
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def _purge(self) -> None:
        now = self._clock()
        for key in [k for k, v in self._entries.items() if v.usable_until <= now]:
            del self._entries[key]
        while len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]
