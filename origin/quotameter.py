"""Quota checks while an upload's bytes arrive: :class:`InFlight` and :class:`UploadMeter`.

Every unfinished upload of a namespace with a quota carries a *charge*: the bytes it has
received (or announced, see :meth:`UploadMeter.reserve`) that may cost the namespace space at
commit. :class:`InFlight` keeps the charges per namespace; an :class:`UploadMeter` (one per
request, from :meth:`origin.quota.Quotas.meter`) updates its upload's charge as bytes arrive
and refuses (403 DENIED) the moment

    namespace usage + other uploads' charges + this upload's bytes > limit.

Which bytes are charged (the choice for blobs the namespace already holds, see
:mod:`origin.quota`): an upload whose digest is known not to be held (closing PUT, monolithic
POST) is charged everything it received. A PATCH, whose digest is not known yet, is charged
nothing while its session holds no more bytes than the namespace's largest blob (it could
still turn out to be that blob, free at commit), and everything once it holds more.

Guarantees: :meth:`UploadMeter.check` and :meth:`UploadMeter.reserve` compare and charge
without an await in between, so parallel uploads of a namespace cannot together pass the
limit (their charges only ever count what has been checked). A charge lives until the upload
ends (:meth:`InFlight.release`: committed, cancelled, refused, purged) or the request settles
it to what the session really holds (:meth:`UploadMeter.settle`). Charges are in memory; the
commit check (:meth:`origin.quota.Quotas.admit`) stays the authority on what is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from regcore import errors

if TYPE_CHECKING:
    from origin.quota import Quotas, Usage

__all__ = ["NO_METER", "InFlight", "Meter", "UploadDenied", "UploadMeter"]


class UploadDenied(errors.Denied):
    """403 DENIED raised by an :class:`UploadMeter`: the upload's bytes do not fit the quota.
    The upload manager cancels the session (its bytes are dropped) when it sees one."""


class InFlight:
    """Charges of unfinished uploads, per namespace. For the tasks of one event loop."""

    def __init__(self) -> None:
        self._charges: dict[str, dict[str, int]] = {}
        self._totals: dict[str, int] = {}
        self._where: dict[str, str] = {}

    def set(self, ns: str, key: str, charge: int) -> None:
        """Make ``charge`` the bytes of upload ``key`` (of namespace ``ns``)."""
        charges = self._charges.setdefault(ns, {})
        self._totals[ns] = self._totals.get(ns, 0) - charges.get(key, 0) + charge
        charges[key] = charge
        self._where[key] = ns

    def others(self, ns: str, key: str) -> int:
        """Bytes charged to ``ns``'s uploads other than ``key``."""
        return self._totals.get(ns, 0) - self._charges.get(ns, {}).get(key, 0)

    def total(self, ns: str) -> int:
        return self._totals.get(ns, 0)

    def release(self, key: str) -> None:
        """Forget upload ``key`` (idempotent)."""
        ns = self._where.pop(key, None)
        if ns is None:
            return
        charges = self._charges[ns]
        self._totals[ns] -= charges.pop(key, 0)
        if not charges:
            del self._charges[ns]
            del self._totals[ns]


class UploadMeter:
    """The quota check of one request adding bytes to one upload (see the module docstring).

    ``offset``: bytes the upload held before this request. ``known_new``: the digest is known
    and not held by the namespace, so every byte counts."""

    def __init__(
        self,
        quotas: Quotas,
        name: str,
        key: str,
        limit: tuple[str, int],
        usage: Usage,
        *,
        offset: int,
        known_new: bool,
    ) -> None:
        self.quotas = quotas
        self.name = name
        self.key = key
        self.limit = limit
        self.ns = name.split("/", 1)[0]
        self.known_new = known_new
        self.received = offset
        self._usage = usage

    def _current(self) -> Usage:
        # After an invalidation (a deletion) the old figures are an over-estimate: safe.
        return self.quotas.loaded(self.ns) or self._usage

    def _chargeable(self, usage: Usage, total: int) -> int:
        return total if self.known_new or total > usage.largest else 0

    def reserve(self, total: int) -> None:
        """The client announced the upload will hold ``total`` bytes after this request
        (``Content-Length``/``Content-Range``): refuse now, before the body is read, if that
        cannot fit; otherwise charge it until :meth:`settle`. Raises DENIED."""
        self._admit(total)

    def check(self, total: int) -> None:
        """The upload is about to hold ``total`` bytes (call before writing each chunk).
        Raises DENIED if they cannot fit; otherwise charges them."""
        self._admit(total)
        self.received = total

    def _admit(self, total: int) -> None:
        usage = self._current()
        charge = self._chargeable(usage, total)
        flight = self.quotas.in_flight
        if charge:
            others = flight.others(self.ns, self.key)
            if usage.total + others + charge > self.limit[1]:
                raise self.quotas.denied(
                    self.name, self.limit, usage.total, charge, uploading=others
                )
        flight.set(self.ns, self.key, charge)

    def settle(self, total: int | None = None) -> None:
        """The request is over and the upload goes on holding ``total`` bytes (default: what
        :meth:`check` last saw): charge exactly those, never refusing."""
        held = self.received if total is None else total
        self.received = held
        self.quotas.in_flight.set(self.ns, self.key, self._chargeable(self._current(), held))

    def release(self) -> None:
        """The upload is over (committed, cancelled, refused): drop its charge."""
        self.quotas.in_flight.release(self.key)


class _NoMeter:
    """The meter of an upload no quota applies to: every method does nothing."""

    def reserve(self, total: int) -> None:
        pass

    def check(self, total: int) -> None:
        pass

    def settle(self, total: int | None = None) -> None:
        pass

    def release(self) -> None:
        pass


NO_METER = _NoMeter()
Meter = UploadMeter | _NoMeter
