"""The one answer to "may this principal do this action on this repository?".

Actions: ``pull``, ``push``, ``delete`` on a repository (registry:2's names; a token's ``*``
means all of them). Sources, checked in this order:

1. the IP allow-list of the action (``quayside.auth.allow``): an address outside it is refused
   whoever asks;
2. a verified token: exactly its ``access`` claims (what the token service granted);
3. a robot: its own patterns (pull, plus push when created with push; never delete);
4. users and anonymous: the first :class:`AccessRule` whose repository glob matches decides
   (first match wins); the user's role there (by name, else the rule's ``*`` entry for any
   signed-in user) gives ``admin`` (pull, push, delete), ``developer`` (pull, push) or
   ``viewer`` (pull); ``anonymous`` lists what callers without credentials may do.

With authentication off (``open``), users and anonymous may do everything (registry:2's
default); the allow-lists still apply. :meth:`Authorizer.grant` computes a token's access: the
intersection of the requested scopes and what the principal may do (never more than a password
would give). Globs use :func:`fnmatch.fnmatchcase` (``*`` also crosses ``/``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType

from regcore.auth.principal import Network, Principal, in_networks
from regcore.auth.robots import RobotStore
from regcore.auth.scopes import Access

__all__ = ["ACTIONS", "ROLES", "AccessRule", "Authorizer"]

ACTIONS = ("pull", "push", "delete")
ROLES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "admin": frozenset({"pull", "push", "delete"}),
        "developer": frozenset({"pull", "push"}),
        "viewer": frozenset({"pull"}),
    }
)
_NONE: frozenset[str] = frozenset()
_ALL = frozenset(ACTIONS)


@dataclass(frozen=True)
class AccessRule:
    """``repository`` glob; ``users``: login name (or ``*``) -> role; ``anonymous``: actions
    granted to callers without credentials."""

    repository: str
    users: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    anonymous: frozenset[str] = _NONE

    def actions_for(self, principal: Principal) -> frozenset[str]:
        if principal.anonymous:
            return self.anonymous
        role = self.users.get(principal.login, self.users.get("*"))
        return ROLES.get(role, _NONE) if role is not None else _NONE


class Authorizer:
    """See the module docstring. ``open``: authentication is off (everyone may do anything
    the allow-lists let through). ``rules`` in priority order; ``allow``: action -> networks."""

    def __init__(
        self,
        rules: Sequence[AccessRule] = (),
        *,
        robots: RobotStore | None = None,
        allow: Mapping[str, Sequence[Network]] | None = None,
        open: bool = False,
    ) -> None:
        self.rules = tuple(rules)
        self.robots = robots
        self.allow = dict(allow or {})
        self.open = open

    def address_allowed(self, action: str, address: str) -> bool:
        """Whether the allow-list of ``action`` (if any) contains ``address``."""
        networks = self.allow.get(action)
        return networks is None or in_networks(address, networks)

    def role_actions(self, principal: Principal, repository: str) -> frozenset[str]:
        """What the principal's role (user/anonymous) or robot patterns give on
        ``repository``, ignoring tokens and allow-lists."""
        if principal.kind == "robot":
            robot = self.robots.get(principal.name) if self.robots is not None else None
            return robot.actions(repository) if robot is not None else _NONE
        if self.open:
            return _ALL
        for rule in self.rules:
            if fnmatchcase(repository, rule.repository):
                return rule.actions_for(principal)
        return _NONE

    def actions(self, principal: Principal, repository: str) -> frozenset[str]:
        """Everything ``principal`` may do on ``repository`` right now."""
        if principal.access is not None:
            granted: set[str] = set()
            for acc in principal.access:
                if acc.type == "repository" and acc.name == repository:
                    granted.update(_ALL if "*" in acc.actions else acc.actions)
            allowed = frozenset(granted)
        else:
            allowed = self.role_actions(principal, repository)
        return frozenset(a for a in allowed if self.address_allowed(a, principal.address))

    def allowed(self, principal: Principal, action: str, repository: str) -> bool:
        return action in self.actions(principal, repository)

    def may_list_catalog(self, principal: Principal) -> bool:
        """``GET /v2/_catalog``: signed-in principals (the list is then filtered); with a
        token, only when it grants ``registry:catalog:*``; anyone when authentication is off."""
        if principal.access is not None:
            return any(
                a.type == "registry" and a.name == "catalog" and "*" in a.actions
                for a in principal.access
            )
        return self.open or not principal.anonymous

    def visible(self, principal: Principal, names: Iterable[str]) -> list[str]:
        """The repositories of ``names`` that ``principal`` may pull (catalog filtering): by
        its roles, or by a token's own grants."""
        out = []
        for name in names:
            if self.allowed(principal, "pull", name) or (
                principal.access is not None
                and principal.own_token
                and "pull" in self.role_actions(principal, name)
                and self.address_allowed("pull", principal.address)
            ):
                out.append(name)
        return out

    def grant(self, principal: Principal, requested: Iterable[Access]) -> list[Access]:
        """A token's access for ``requested``: per resource, the requested actions the
        principal may do (``*`` is granted only to who may do every action); resources with
        nothing left are dropped. ``registry:catalog:*`` goes to signed-in principals."""
        out: list[Access] = []
        for acc in requested:
            if acc.type == "registry" and acc.name == "catalog":
                if "*" in acc.actions and not principal.anonymous:
                    out.append(Access("registry", "catalog", ("*",)))
                continue
            if acc.type.split("(")[0] != "repository":
                continue
            may = self.actions(principal, acc.name)
            actions = tuple(a for a in acc.actions if a in may or (a == "*" and may >= _ALL))
            if actions:
                out.append(Access("repository", acc.name, actions))
        return out
