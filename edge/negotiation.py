"""Manifest content negotiation at the edge: a stored manifest against a client's ``Accept``.

The edge asks its upstreams for every manifest type (:data:`FULL_ACCEPT`), stores what they
answer verbatim and negotiates each client's ``Accept`` against the stored media type, so a
client naming only some types is served from the cache like any other:

- :meth:`Negotiation.parse_accept`: the client's raw ``Accept`` values as media types
  (:func:`regcore.mediatypes.parse_accept`).
- :meth:`Negotiation.decide`: ``"serve"`` the stored manifest, ``"narrow"`` a Docker manifest
  list asked for by tag to its linux/amd64 child, or raise 404 MANIFEST_UNKNOWN for an OCI
  manifest or index the client did not list (:func:`regcore.mediatypes.negotiate`:
  distribution's rules).
- :meth:`Negotiation.platform_child`: the child a list is narrowed to (the first entry whose
  platform is linux/amd64, as distribution picks it:
  :func:`regcore.mediatypes.find_platform_child`), or ``None``.
- :meth:`Negotiation.check_child`: 400 MANIFEST_INVALID when that child is a schema 2
  manifest the client did not list (:func:`regcore.mediatypes.check_platform_child`).

The origin answers with the same functions (``origin/manifests.py``), so edge, origin and
registry:2 answer every ``Accept`` alike (documented differences: :mod:`regcore.mediatypes`).
The results are pure functions of their arguments (a list's child of its digest: content is
immutable), memoised per instance (bounded, see :mod:`edge.memo`), because the same few
``Accept`` headers and hot tags arrive on every request.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.memo import Memo
from regcore import errors
from regcore import mediatypes as mt
from regcore.mediatypes import PlatformChild as Child
from regcore.mediatypes import find_platform_child

FULL_ACCEPT: tuple[str, ...] = mt.DEFAULT_ACCEPT

__all__ = ["FULL_ACCEPT", "Child", "Negotiation", "find_platform_child"]

# (verdict, or the 404 to raise: (detail, message))
_Decision = tuple[mt.Verdict | None, tuple[object, str] | None]


class Negotiation:
    """Memoised content negotiation (see the module docstring). One per application."""

    def __init__(self) -> None:
        self._accept: Memo[tuple[str, ...], tuple[str, ...]] = Memo()
        self._decisions: Memo[tuple[str, tuple[str, ...], bool], _Decision] = Memo()
        self._children: Memo[str, tuple[Child | None]] = Memo()

    def parse_accept(self, values: list[str]) -> tuple[str, ...]:
        """:func:`regcore.mediatypes.parse_accept` of the raw ``Accept`` values, as a tuple."""
        key = tuple(values)
        parsed = self._accept.get(key)
        if parsed is None:
            parsed = self._accept.put(key, tuple(mt.parse_accept(key)))
        return parsed

    def decide(self, media_type: str, accepted: Sequence[str], *, by_tag: bool) -> mt.Verdict:
        """:func:`regcore.mediatypes.negotiate`: ``"serve"`` or ``"narrow"``; raises
        ManifestUnknown (404) for an OCI manifest or index the client did not list."""
        key = (media_type, tuple(accepted), by_tag)
        decision = self._decisions.get(key)
        if decision is None:
            try:
                decision = (mt.negotiate(media_type, key[1], by_tag=by_tag), None)
            except errors.ManifestUnknown as exc:
                decision = (None, (exc.detail, exc.msg))
            self._decisions.put(key, decision)
        verdict, refusal = decision
        if refusal is not None:
            raise errors.ManifestUnknown(refusal[0], message=refusal[1])
        assert verdict is not None
        return verdict

    def platform_child(self, list_digest: str, body: bytes) -> Child | None:
        """:func:`find_platform_child` of the list ``body`` (whose digest is ``list_digest``)."""
        found = self._children.get(list_digest)
        if found is None:
            found = self._children.put(list_digest, (find_platform_child(body),))
        return found[0]

    def check_child(self, media_type: str, accepted: Sequence[str]) -> None:
        """:func:`regcore.mediatypes.check_platform_child`: raises ManifestInvalid (400)."""
        if mt.normalize(media_type) == mt.DOCKER_MANIFEST:
            mt.check_platform_child(media_type, accepted)
