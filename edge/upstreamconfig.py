"""Upstream registries of the edge: :class:`UpstreamConfig` and the ways to write one.

An upstream comes from a CLI ``--upstream`` value (``URL`` or ``NAME=URL``,
:func:`parse_upstream_arg`), from an entry of the edge's ``upstreams:`` list or mapping, or from
``QUAYSIDE_EDGE_UPSTREAMS`` (comma- or space-separated ``NAME=URL`` values, or YAML);
:func:`as_upstreams` is the schema coercer for all of them.

Guarantees: credentials in a URL (``https://user:pass@host``) are moved to ``username`` /
``password`` and never kept in ``url``; the password is not in ``repr()``; bad entries raise
:class:`~regcore.configschema.ConfigError` (or ``SubKeyError`` inside a schema) naming the
entry and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from regcore.configschema import ConfigError, Leaf, SubKeyError, normalize
from regcore.configvalues import (
    BOOL,
    DURATION_POSITIVE,
    STR,
    as_existing_file,
    as_str,
    as_str_list,
    as_url,
    int_at_least,
    one_of,
)

__all__ = [
    "DOCKER_HUB_HOSTS",
    "UPSTREAM_SCHEMA",
    "UpstreamAuth",
    "UpstreamConfig",
    "as_upstreams",
    "parse_upstream_arg",
]


DOCKER_HUB_HOSTS = ("registry-1.docker.io", "docker.io", "index.docker.io")


@dataclass(frozen=True)
class UpstreamAuth:
    """``auth:`` of an upstream that issues its own tokens (``mode: token``): the edge accepts
    the upstream's tokens, verified offline with the keys of ``jwks`` (default
    ``<url>/auth/jwks.json``) against ``issuer`` and ``service`` (the audience); anonymous
    callers are sent to ``realm``. ``service`` and ``realm`` left unset are learned from the
    upstream's own ``/v2/`` challenge. ``jwks_min_interval``: seconds between two fetches of
    the key set at least (a token naming an unknown key triggers one)."""

    mode: str = "token"
    jwks: str = ""
    issuer: str = ""
    service: str | None = None
    realm: str | None = None
    jwks_min_interval: float = 30.0


@dataclass(frozen=True)
class UpstreamConfig:
    """One upstream registry.

    ``name`` is the ``?ns=`` value and path prefix that select it; ``hosts`` are further ns
    names (``match_names`` adds the URL's host[:port], and ``docker.io`` for Docker Hub).
    ``docker_hub`` left as ``None`` is decided from the URL host / name. ``url`` never carries
    credentials (they are moved to ``username``/``password``).
    """

    name: str
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    token_file: str | None = None
    hosts: tuple[str, ...] = ()
    docker_hub: bool | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retries: int = 3
    # Private upstream (PROTOCOL.md 13): every answer, cached or not, is tied to an upstream
    # access check made with the client's own credentials.
    private: bool = False
    # Token mode (edge/auth.py): callers present the upstream's own tokens; None: off.
    auth: UpstreamAuth | None = None

    def __post_init__(self) -> None:
        if self.docker_hub is None:
            auto = self.name == "docker.io" or self.netloc in DOCKER_HUB_HOSTS
            object.__setattr__(self, "docker_hub", auto)

    @property
    def netloc(self) -> str:
        """``host[:port]`` of ``url``."""
        return urlsplit(self.url).netloc.rpartition("@")[2].lower()

    @property
    def match_names(self) -> tuple[str, ...]:
        """Every ``?ns=`` value that selects this upstream, ``name`` first, no duplicates."""
        names = [self.name, *self.hosts, self.netloc]
        if self.docker_hub:
            names.append("docker.io")
        return tuple(dict.fromkeys(names))

    def read_password(self) -> str | None:
        """``password``, else the stripped contents of ``password_file``, else ``None``.

        Raises:
            OSError: the file cannot be read (it existed when the config was loaded).
        """
        if self.password is not None:
            return self.password
        if self.password_file is not None:
            with open(self.password_file, encoding="utf-8") as f:
                return f.read().strip()
        return None

    def read_token(self) -> str | None:
        """Stripped contents of ``token_file`` (a ready Bearer token), or ``None``."""
        if self.token_file is None:
            return None
        with open(self.token_file, encoding="utf-8") as f:
            return f.read().strip()


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


def _upstream_name(v: Any) -> str:
    s = as_str(v).strip()
    if not _NAME_RE.match(s):
        raise ValueError(f"invalid upstream name {s!r}: use letters, digits, '.', '-', '_', ':'")
    return s


UPSTREAM_SCHEMA: dict[str, Any] = {
    "name": Leaf(_upstream_name),
    "url": Leaf(as_url),
    "username": STR,
    "password": STR,
    "password_file": Leaf(as_existing_file),
    "token_file": Leaf(as_existing_file),
    "hosts": Leaf(as_str_list),
    "docker_hub": BOOL,
    "timeouts": {"connect": DURATION_POSITIVE, "read": DURATION_POSITIVE},
    "retries": Leaf(int_at_least(0)),
    "private": BOOL,
    "auth": {
        "mode": Leaf(one_of("none", "token")),
        "jwks": Leaf(as_url),
        "issuer": STR,
        "service": STR,
        "realm": Leaf(as_url),
        "jwks_min_interval": DURATION_POSITIVE,
    },
}


def _upstream_auth(d: Mapping[str, Any], url: str, private: bool) -> UpstreamAuth | None:
    """The ``auth`` entry of an upstream mapping (None for ``mode: none`` or absent).
    Raises SubKeyError naming the key."""
    a = d.get("auth")
    if a is None:
        return None
    mode = a.get("mode", "none")
    if mode == "none":
        extra = sorted(k for k in a if k != "mode")
        if extra:
            raise SubKeyError(f"auth.{extra[0]}", "only meaningful with 'mode: token'")
        return None
    if private:
        raise SubKeyError("auth.mode", "'mode: token' and 'private: true' exclude each other")
    if not a.get("issuer"):
        raise SubKeyError("auth.issuer", "required with 'mode: token' (the tokens' 'iss')")
    return UpstreamAuth(
        mode=mode,
        jwks=a.get("jwks") or url.rstrip("/") + "/auth/jwks.json",
        issuer=a["issuer"],
        service=a.get("service"),
        realm=a.get("realm"),
        jwks_min_interval=a.get("jwks_min_interval", 30.0),
    )


def _upstream_from_mapping(data: Mapping[str, Any], name: str | None, where: str) -> UpstreamConfig:
    try:
        d = normalize(data, UPSTREAM_SCHEMA, "", "upstream")
    except ConfigError as e:
        raise SubKeyError(e.key or "?", e.problem) from e
    if name is not None:
        if "name" in d and d["name"] != name:
            raise SubKeyError("name", f"{d['name']!r} differs from the mapping key {name!r}")
        d["name"] = name
    if "url" not in d:
        raise SubKeyError("url", "required")
    url, user, password = _split_credentials(d["url"])
    if user is not None:
        if "username" in d or "password" in d:
            raise SubKeyError("url", "credentials both in the URL and in username/password")
        d["username"], d["password"] = user, password
    if "password" in d and "password_file" in d:
        raise SubKeyError("password_file", "give either 'password' or 'password_file'")
    timeouts = d.get("timeouts", {})
    return UpstreamConfig(
        name=d.get("name") or _derive_name(url),
        url=url,
        username=d.get("username"),
        password=d.get("password"),
        password_file=d.get("password_file"),
        token_file=d.get("token_file"),
        hosts=tuple(h.lower() for h in d.get("hosts", ())),
        docker_hub=d.get("docker_hub"),
        connect_timeout=timeouts.get("connect", 5.0),
        read_timeout=timeouts.get("read", 30.0),
        retries=d.get("retries", 3),
        private=d.get("private", False),
        auth=_upstream_auth(d, url, d.get("private", False)),
    )


def _split_credentials(url: str) -> tuple[str, str | None, str | None]:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url.rstrip("/"), None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, hostport, parts.path, parts.query, ""))
    return clean.rstrip("/"), user or None, password or None


def _derive_name(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2].lower()


def parse_upstream_arg(s: str) -> UpstreamConfig:
    """Parse a CLI ``--upstream`` value: ``URL`` or ``NAME=URL``.

    Without a name, the name is the URL's ``host[:port]``. Credentials in the URL
    (``https://user:pass@host``) are moved to ``username``/``password``.

    Raises:
        ConfigError: empty name, bad name, or a URL that is not http(s)://host[:port].
    """
    try:
        return _parse_upstream(s)
    except ValueError as e:
        raise ConfigError(
            f"--upstream {s!r}: {e}", key="upstreams", source="--upstream", problem=str(e)
        ) from e


def _parse_upstream(s: str) -> UpstreamConfig:
    text = s.strip()
    name: str | None = None
    head, sep, tail = text.partition("=")
    if sep and "://" not in head and "/" not in head:
        name, text = _upstream_name(head), tail.strip()
    return _upstream_from_mapping({"url": as_url(text)}, name, "--upstream")


def as_upstreams(value: Any) -> tuple[UpstreamConfig, ...]:
    """Coerce a list (mappings, ``NAME=URL`` strings, UpstreamConfig) or a name->entry mapping."""
    if isinstance(value, str):
        stripped = value.strip()
        value = (
            yaml.safe_load(stripped)
            if stripped[:1] in ("[", "{")
            else [p for p in stripped.replace(",", " ").split() if p]
        )
    items: list[tuple[str, str | None, Any]] = []
    if isinstance(value, Mapping):
        items = [(str(k), str(k), v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        items = [(f"[{i}]", None, v) for i, v in enumerate(value)]
    else:
        raise ValueError("expected a list or a mapping of upstreams")
    out: list[UpstreamConfig] = []
    for where, name, entry in items:
        try:
            if isinstance(entry, UpstreamConfig):
                out.append(entry)
            elif isinstance(entry, str):
                out.append(_parse_upstream(entry if name is None else f"{name}={entry}"))
            elif isinstance(entry, Mapping):
                out.append(_upstream_from_mapping(entry, name, where))
            else:
                raise ValueError("expected a mapping or a 'NAME=URL' string")
        except SubKeyError as e:
            raise SubKeyError(f"{where}.{e.subpath}".replace(".[", "["), e.problem) from e
        except ValueError as e:
            raise SubKeyError(where, str(e)) from e
    return tuple(out)
