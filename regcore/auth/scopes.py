"""Scopes: what a registry token grants (``repository:team/app:pull,push``), without JWT.

:class:`Access` is one resource and its actions; :func:`parse_scopes` reads ``scope=``
parameters; :func:`access_from_claims` and :func:`allows` read the ``access`` claim of a token
that was verified elsewhere (:mod:`regcore.auth.tokens`, :mod:`edge.authtokens`). This module
imports neither PyJWT nor cryptography, so a server that only names scopes (the edge's
authorization point, the authorizer's rules) does not load them; :mod:`regcore.auth.tokens`
re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Access", "access_from_claims", "allows", "parse_scopes"]


@dataclass(frozen=True, slots=True)
class Access:
    """One resource and the actions on it: ``repository:team/app:pull,push``."""

    type: str
    name: str
    actions: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, scope: str) -> Access:
        """Parse ``type:name:actions`` (the name may itself contain ``:``, e.g. a port).

        Raises :class:`ValueError` on malformed input.
        """
        kind, sep, rest = scope.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not (sep and sep2 and kind and name):
            raise ValueError(f"malformed scope {scope[:100]!r}")
        acts = tuple(dict.fromkeys(a for a in actions.split(",") if a))
        return cls(kind, name, acts)

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def to_claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def parse_scopes(values: Iterable[str]) -> list[Access]:
    """All scopes in ``values`` (each may hold several, space separated); malformed ones are
    skipped; actions of the same resource are merged in order."""
    merged: dict[tuple[str, str], list[str]] = {}
    for value in values:
        for scope in value.split():
            try:
                acc = Access.parse(scope)
            except ValueError:
                continue
            acts = merged.setdefault((acc.type, acc.name), [])
            acts.extend(a for a in acc.actions if a not in acts)
    return [Access(t, n, tuple(a)) for (t, n), a in merged.items()]


def access_from_claims(claims: dict[str, Any]) -> list[Access]:
    """The ``access`` claim as :class:`Access` entries (malformed entries skipped)."""
    out: list[Access] = []
    for item in claims.get("access") or []:
        if not isinstance(item, dict):
            continue
        kind, name, actions = item.get("type"), item.get("name"), item.get("actions")
        if isinstance(kind, str) and isinstance(name, str) and isinstance(actions, list):
            out.append(Access(kind, name, tuple(a for a in actions if isinstance(a, str))))
    return out


def allows(claims: dict[str, Any], kind: str, name: str, action: str) -> bool:
    """Whether verified ``claims`` grant ``action`` on ``kind:name`` (``*`` grants all)."""
    return any(
        a.type == kind and a.name == name and (action in a.actions or "*" in a.actions)
        for a in access_from_claims(claims)
    )
