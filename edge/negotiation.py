"""Manifest content negotiation at the edge: what a client accepts, what to ask upstream for.

- :meth:`Negotiation.parse_accept`: the client's raw ``Accept`` values as media types
  (:func:`regcore.mediatypes.parse_accept`).
- :meth:`Negotiation.acceptable` / :meth:`~Negotiation.require_acceptable`: whether a manifest
  of a media type may be served to that client (registry:2 answers 404 MANIFEST_UNKNOWN when
  not: :func:`regcore.mediatypes.require_acceptable`).
- :meth:`Negotiation.forward`: the types to ask the upstream for on the client's behalf
  (:func:`forward_accept`) and whether the answer may be recorded for a tag: only an answer to
  an ``Accept`` naming every type we serve (:data:`FULL_ACCEPT`) is what the tag *is* (an
  upstream may convert for a client naming only some types).

The results are pure functions of their arguments, memoised per instance (bounded, see
:mod:`edge.memo`), because the same few ``Accept`` headers arrive on every request.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.memo import Memo
from regcore import mediatypes as mt

FULL_ACCEPT: tuple[str, ...] = mt.DEFAULT_ACCEPT

__all__ = ["FULL_ACCEPT", "Negotiation", "forward_accept"]


def forward_accept(accepted: list[str]) -> tuple[str, ...]:
    """The manifest types to ask upstream for on behalf of a client (see
    :func:`regcore.mediatypes.upstream_accept`)."""
    return tuple(t.strip() for t in mt.upstream_accept(accepted).split(",") if t.strip())


class Negotiation:
    """Memoised content negotiation (see the module docstring). One per application."""

    def __init__(self) -> None:
        self._accept: Memo[tuple[str, ...], tuple[str, ...]] = Memo()
        self._forward: Memo[tuple[str, ...], tuple[tuple[str, ...], bool]] = Memo()
        self._acceptable: Memo[tuple[str, tuple[str, ...]], bool] = Memo()

    def parse_accept(self, values: list[str]) -> tuple[str, ...]:
        """:func:`regcore.mediatypes.parse_accept` of the raw ``Accept`` values, as a tuple."""
        key = tuple(values)
        parsed = self._accept.get(key)
        if parsed is None:
            parsed = self._accept.put(key, tuple(mt.parse_accept(key)))
        return parsed

    def acceptable(self, media_type: str, accepted: Sequence[str]) -> bool:
        """:func:`regcore.mediatypes.acceptable`."""
        key = (media_type, tuple(accepted))
        ok = self._acceptable.get(key)
        if ok is None:
            ok = self._acceptable.put(key, mt.acceptable(media_type, key[1]))
        return ok

    def require_acceptable(self, media_type: str, accepted: Sequence[str]) -> None:
        """:func:`regcore.mediatypes.require_acceptable`: raises ManifestUnknown when not."""
        if not self.acceptable(media_type, accepted):
            mt.require_acceptable(media_type, accepted)

    def forward(self, accepted: Sequence[str]) -> tuple[tuple[str, ...], bool]:
        """(types to ask upstream for, whether the answer may be recorded for the tag)."""
        key = tuple(accepted)
        item = self._forward.get(key)
        if item is None:
            forwarded = forward_accept(list(key))
            item = self._forward.put(key, (forwarded, set(forwarded) >= set(FULL_ACCEPT)))
        return item
