"""The origin's access-control configuration: distribution's ``auth:`` plus ``quayside.auth``
and ``quayside.audit``.

Distribution's section, as registry:2 reads it (one mode at most)::

    auth:
      htpasswd: {realm: quayside, path: /etc/quayside/htpasswd}        # bcrypt entries only
    # or
    auth:
      token: {realm: https://registry.local:5000/auth/token, service: quayside,
              issuer: quayside, rootcertbundle: /etc/quayside/token-bundle.pem}

Any other key under ``auth`` (``silly``, ``token.autoredirect``, ``token.jwks``...) is unknown
and stops start-up with its name. Our own section::

    quayside:
      auth:
        access:                      # first matching repository glob wins
          - repository: "public/*"
            anonymous: pull
            users: {"*": viewer, alice: admin}
          - repository: "team/*"
            users: {alice: admin, bob: developer, "*": viewer}
        robots: {path: DIR/quayside/robots.json}
        limits: {failures_per_user: 5, failures_per_address: 20, window: 5m}
        allow: {push: [10.0.0.0/8], delete: [10.1.2.3]}   # per action, CIDRs
        trustedproxies: [127.0.0.1]  # X-Forwarded-For believed only from these peers
        tokenservice: {enabled: true, issuer: quayside, service: quayside, expiration: 5m,
                       algorithm: ES256, key: ..., certificate: ..., users: htpasswd path}
      audit: {enabled: true, path: DIR/quayside/audit.log, stdout: false,
              maxbytes: 100MiB, backups: 5}

:func:`auth_config` checks the whole (htpasswd file parsed: a non-bcrypt or malformed line is
refused with its line number; roles known; ``access`` rules without any authentication refused,
since they would do nothing) and raises :class:`~regcore.configschema.ConfigError` naming the
key. Paths default under the storage root's ``quayside/`` directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from regcore.auth.authorizer import ACTIONS, ROLES, AccessRule
from regcore.auth.principal import Network, parse_networks
from regcore.configschema import ConfigError, Getter, Leaf, SubKeyError, typename
from regcore.configvalues import (
    BOOL,
    DURATION_POSITIVE,
    PATH,
    STR,
    as_positive_size,
    as_str,
    as_str_list,
    as_url,
    int_at_least,
    one_of,
)

__all__ = [
    "AUDIT_SCHEMA",
    "AUTH_SCHEMA",
    "QUAYSIDE_AUTH_SCHEMA",
    "AuditConfig",
    "AuthConfig",
    "HtpasswdAuth",
    "LoginLimits",
    "TokenAuth",
    "TokenServiceConfig",
    "auth_config",
    "refuse",
]

AuthMode = Literal["none", "htpasswd", "token"]


def refuse(why: str) -> Leaf:
    """A schema leaf that rejects any value (a registry:2 section we do not implement)."""

    def coerce(v: Any) -> Any:
        raise ValueError(why)

    return Leaf(coerce, yaml_env=True)


def _algorithms(v: Any) -> tuple[str, ...]:
    algos = as_str_list(v)
    for a in algos:
        if a not in ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512"):
            raise ValueError(f"unsupported signing algorithm {a!r}")
    return algos


def _rules(v: Any) -> tuple[AccessRule, ...]:
    if not isinstance(v, list | tuple):
        raise ValueError(f"expected a list of rules, got {typename(v)}")
    rules = []
    for i, item in enumerate(v):
        if not isinstance(item, Mapping):
            raise SubKeyError(f"[{i}]", f"expected a mapping, got {typename(item)}")
        unknown = set(map(str, item)) - {"repository", "users", "anonymous"}
        if unknown:
            raise SubKeyError(f"[{i}].{sorted(unknown)[0]}", "unknown key")
        repo = item.get("repository")
        if not isinstance(repo, str) or not repo:
            raise SubKeyError(f"[{i}].repository", "a repository glob is required")
        users = item.get("users") or {}
        if not isinstance(users, Mapping):
            raise SubKeyError(f"[{i}].users", "expected a mapping of user to role")
        for user, role in users.items():
            if role not in ROLES:
                raise SubKeyError(
                    f"[{i}].users.{user}", f"unknown role {role!r} (admin, developer, viewer)"
                )
        anon = item.get("anonymous") or ()
        anon_actions = as_str_list(anon) if anon else ()
        for a in anon_actions:
            if a not in ACTIONS:
                raise SubKeyError(f"[{i}].anonymous", f"unknown action {a!r}")
        rules.append(
            AccessRule(
                repo,
                MappingProxyType({str(u): str(r) for u, r in users.items()}),
                frozenset(anon_actions),
            )
        )
    return tuple(rules)


def _allow(v: Any) -> Mapping[str, tuple[Network, ...]]:
    if not isinstance(v, Mapping):
        raise ValueError(f"expected a mapping of action to address ranges, got {typename(v)}")
    out: dict[str, tuple[Network, ...]] = {}
    for action, ranges in v.items():
        if action not in ACTIONS:
            raise SubKeyError(str(action), f"unknown action (one of {', '.join(ACTIONS)})")
        try:
            out[str(action)] = parse_networks(as_str_list(ranges))
        except ValueError as exc:
            raise SubKeyError(str(action), str(exc)) from None
    return MappingProxyType(out)


def _networks(v: Any) -> tuple[Network, ...]:
    return parse_networks(as_str_list(v))


AUTH_SCHEMA: dict[str, Any] = {
    "htpasswd": {"realm": STR, "path": PATH},
    "token": {
        "realm": Leaf(as_url),
        "service": STR,
        "issuer": STR,
        "rootcertbundle": PATH,
        "signingalgorithms": Leaf(_algorithms),
    },
}

QUAYSIDE_AUTH_SCHEMA: dict[str, Any] = {
    "access": Leaf(_rules, yaml_env=True),
    "robots": {"path": PATH},
    "limits": {
        "failures_per_user": Leaf(int_at_least(0)),
        "failures_per_address": Leaf(int_at_least(0)),
        "window": DURATION_POSITIVE,
    },
    "allow": Leaf(_allow, yaml_env=True),
    "trustedproxies": Leaf(_networks),
    "tokenservice": {
        "enabled": BOOL,
        "issuer": STR,
        "service": STR,
        "expiration": DURATION_POSITIVE,
        "algorithm": Leaf(one_of("ES256", "RS256", aliases={"es256": "ES256", "rs256": "RS256"})),
        "key": PATH,
        "certificate": PATH,
        "users": PATH,
    },
}

AUDIT_SCHEMA: dict[str, Any] = {
    "enabled": BOOL,
    "path": PATH,
    "stdout": BOOL,
    "maxbytes": Leaf(as_positive_size),
    "backups": Leaf(int_at_least(0)),
}


@dataclass(frozen=True)
class HtpasswdAuth:
    realm: str
    path: str


@dataclass(frozen=True)
class TokenAuth:
    realm: str
    service: str
    issuer: str
    rootcertbundle: str | None = None
    signingalgorithms: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenServiceConfig:
    enabled: bool = False
    issuer: str = "quayside"
    service: str = "quayside"
    expiration: float = 300.0
    algorithm: str = "ES256"
    key: str = ""
    certificate: str = ""
    users: str | None = None


@dataclass(frozen=True)
class LoginLimits:
    failures_per_user: int = 5
    failures_per_address: int = 20
    window: float = 300.0


@dataclass(frozen=True)
class AuditConfig:
    enabled: bool = True
    path: str = ""
    stdout: bool = False
    maxbytes: int = 100 * 1024 * 1024
    backups: int = 5


@dataclass(frozen=True)
class AuthConfig:
    """Everything the origin's access control needs (``mode`` ``none`` = open registry)."""

    mode: AuthMode = "none"
    htpasswd: HtpasswdAuth | None = None
    token: TokenAuth | None = None
    rules: tuple[AccessRule, ...] = ()
    robots_path: str = ""
    limits: LoginLimits = field(default_factory=LoginLimits)
    allow: Mapping[str, tuple[Network, ...]] = field(default_factory=lambda: MappingProxyType({}))
    trustedproxies: tuple[Network, ...] = ()
    tokenservice: TokenServiceConfig = field(default_factory=TokenServiceConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    @property
    def users_path(self) -> str | None:
        """The htpasswd file users come from (``auth.htpasswd.path`` or the token service's)."""
        if self.htpasswd is not None:
            return self.htpasswd.path
        return self.tokenservice.users


def _err(key: str, problem: str) -> ConfigError:
    return ConfigError(f"config: {key}: {problem}", key=key, problem=problem)


def _check_htpasswd(key: str, path: str) -> None:
    from regcore.auth.htpasswd import HtpasswdError, read_entries  # bcrypt: only when configured

    if not os.path.isfile(path):
        raise _err(key, f"file {path!r} does not exist (create it with 'quayside users add')")
    try:
        read_entries(path)
    except HtpasswdError as exc:
        raise _err(key, str(exc)) from None
    except OSError as exc:
        raise _err(key, f"cannot read {path!r}: {exc.strerror}") from None


def auth_config(g: Getter, root: str) -> AuthConfig:
    """Build and check :class:`AuthConfig` from the merged tree (see the module docstring).

    Raises:
        ConfigError: both modes, a missing required key, an unreadable or non-bcrypt htpasswd
            file (line number named), access rules with authentication off.
    """
    base = os.path.join(root, "quayside")
    htpasswd = token = None
    if g("auth.htpasswd") is not None and g("auth.token") is not None:
        raise _err("auth", "choose one of 'htpasswd' and 'token'")
    if g("auth.htpasswd") is not None:
        path = g("auth.htpasswd.path")
        if not path:
            raise _err("auth.htpasswd.path", "required")
        _check_htpasswd("auth.htpasswd.path", path)
        htpasswd = HtpasswdAuth(as_str(g("auth.htpasswd.realm", "quayside")), path)
    ts_enabled = bool(g("quayside.auth.tokenservice.enabled", False))
    if g("auth.token") is not None:
        for key in ("realm", "service", "issuer"):
            if not g(f"auth.token.{key}"):
                raise _err(f"auth.token.{key}", "required")
        bundle = g("auth.token.rootcertbundle")
        if bundle is None and not ts_enabled:
            raise _err(
                "auth.token.rootcertbundle",
                "required (or enable quayside.auth.tokenservice to trust the origin's own key)",
            )
        if bundle is not None and not os.path.isfile(bundle):
            raise _err("auth.token.rootcertbundle", f"file {bundle!r} does not exist")
        token = TokenAuth(
            g("auth.token.realm"),
            g("auth.token.service"),
            g("auth.token.issuer"),
            bundle,
            tuple(g("auth.token.signingalgorithms", ())),
        )
    mode: AuthMode = "htpasswd" if htpasswd else "token" if token else "none"
    rules = tuple(g("quayside.auth.access", ()))
    if rules and mode == "none":
        raise _err("quayside.auth.access", "access rules need auth.htpasswd or auth.token")
    ts = TokenServiceConfig(
        enabled=ts_enabled,
        issuer=g("quayside.auth.tokenservice.issuer", token.issuer if token else "quayside"),
        service=g("quayside.auth.tokenservice.service", token.service if token else "quayside"),
        expiration=g("quayside.auth.tokenservice.expiration", 300.0),
        algorithm=g("quayside.auth.tokenservice.algorithm", "ES256"),
        key=g("quayside.auth.tokenservice.key", os.path.join(base, "token", "signing-key.pem")),
        certificate=g(
            "quayside.auth.tokenservice.certificate",
            os.path.join(base, "token", "signing-cert.pem"),
        ),
        users=g("quayside.auth.tokenservice.users"),
    )
    if ts.enabled:
        if htpasswd is None and ts.users is None:
            raise _err("quayside.auth.tokenservice.users", "required without auth.htpasswd")
        if ts.users is not None:
            _check_htpasswd("quayside.auth.tokenservice.users", ts.users)
        if token is not None and (token.issuer, token.service) != (ts.issuer, ts.service):
            raise _err(
                "quayside.auth.tokenservice.issuer",
                "issuer and service must equal auth.token's (the origin verifies its own tokens)",
            )
    return AuthConfig(
        mode=mode,
        htpasswd=htpasswd,
        token=token,
        rules=rules,
        robots_path=g("quayside.auth.robots.path", os.path.join(base, "robots.json")),
        limits=LoginLimits(
            failures_per_user=g("quayside.auth.limits.failures_per_user", 5),
            failures_per_address=g("quayside.auth.limits.failures_per_address", 20),
            window=g("quayside.auth.limits.window", 300.0),
        ),
        allow=g("quayside.auth.allow", MappingProxyType({})),
        trustedproxies=tuple(g("quayside.auth.trustedproxies", ())),
        tokenservice=ts,
        audit=AuditConfig(
            enabled=g("quayside.audit.enabled", True),
            path=g("quayside.audit.path", os.path.join(base, "audit.log")),
            stdout=g("quayside.audit.stdout", False),
            maxbytes=g("quayside.audit.maxbytes", 100 * 1024 * 1024),
            backups=g("quayside.audit.backups", 5),
        ),
    )
