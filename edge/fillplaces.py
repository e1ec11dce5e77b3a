"""Where a fill's readers are: the bookkeeping behind ``need`` and ``readers_moved``.

While streaming, a :class:`edge.fillstate.Fill` knows where each of its readers is (to
:data:`edge.fillstate.LIVE_SPAN`) and tells ``followed`` (the staged blob, a
:class:`Followed`), so that an absorb can hold a piece in memory while a reader still sends
from it (:mod:`regcore.storage.absorb`, hold-back):

- ``need(floor)``, the lowest place from ``floor`` on, is a bisection of the places kept
  sorted (O(log readers));
- ``readers_moved()`` is signalled only when the last reader at the place ``need`` last
  answered moves on or leaves (no other move can let a held piece go, see
  :meth:`ReaderPlaces._moved`): in a herd, readers ahead of the slowest one move without
  waking the absorb.

:class:`ReaderPlaces` is a mixin of :class:`edge.fillstate.Fill`, not an object the fill
holds: ``Fill.spans`` places and moves its reader once per span it yields, and as methods of
the fill itself those calls cost what they did before this bookkeeping had a module of its
own (no extra call, no extra attribute lookup). Use from one event loop.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Protocol


class Followed(Protocol):
    """The live bytes' owner (the staged blob): told where readers are, so an absorb can
    hold a piece in memory while a reader still sends from it (:mod:`regcore.storage.absorb`).

    ``need`` is called on the event loop. ``readers_moved`` is called when ``need``'s last
    answer may have risen: the last reader at that place moved on or left (not on every
    move; :meth:`ReaderPlaces._moved` says why that is enough for the absorb)."""

    def follow(self, need: Callable[[int], int | None]) -> None: ...
    def readers_moved(self) -> None: ...


class ReaderPlaces:
    """The places of a fill's readers (mixed into :class:`edge.fillstate.Fill`).

    The class mixing it in calls ``__init__`` and owns ``_followed``: set while the staged
    blob follows the readers, None before that and once the fill is finished (then
    :meth:`_moved` signals nothing)."""

    _followed: Followed | None

    def __init__(self) -> None:
        # reader -> (first offset it has yet to send, id(reader)): its entry in _order
        self._places: dict[object, tuple[int, int]] = {}
        self._order: list[tuple[int, int]] = []  # the entries of _places, sorted
        self._told: int | None = None  # need()'s last answer (None: no reader there)

    # Readers' places: ``_places`` maps a reader to its entry ``(offset, id(reader))`` in
    # ``_order``, which holds every entry sorted (the id only makes entries unique; a reader
    # in ``_places`` is alive, so its id is not reused). ``need`` bisects ``_order``
    # (O(log n)); a move is a bisection, a ``del`` and an ``insort`` (O(log n) comparisons
    # and a memmove of the list's pointers). All of it runs on the event loop: ``need`` is
    # called only by the absorber's ``_retire``, which runs on the loop (from a report queued
    # with ``call_soon_threadsafe``, from ``readers_moved`` and from ``finish``), never on its
    # receive, write or hash threads; so ``need`` never sees ``_order`` half-changed. (The
    # former ``min()`` over ``_places.values()`` relied on the same: iterated on another
    # thread it could raise when a reader joined or left.)

    def _need(self, floor: int) -> int | None:
        """The lowest offset from ``floor`` on that a reader still has to send (None: no
        reader there; one further behind reads the file anyway). On the loop."""
        order = self._order
        i = bisect.bisect_left(order, (floor,))  # (floor,) sorts before every (floor, id)
        self._told = order[i][0] if i < len(order) else None
        return self._told

    def _place(self, reader: object, pos: int) -> None:
        """``reader`` is at ``pos`` (joins, or stays): nothing to signal, since a new or
        lower place can only lower ``need``'s answers (hold more, let nothing go)."""
        self._set(reader, pos)

    def _moved(self, reader: object, pos: int | None) -> None:
        """``reader`` sent everything before ``pos`` (None: it left).

        Signals ``followed.readers_moved()`` only when ``reader`` was the last one at
        ``told``, the place ``need`` last answered; no other move can let a piece go for the
        readers' sake. The absorb (:meth:`regcore.storage.absorb.Absorber._retire`) asks
        ``need(floor)`` once per retire, ``floor`` being its oldest live piece's start, and
        lets pieces go only while they end at or before the answer. Its pieces are
        contiguous, so after such a retire its floor is at or below ``told``, and only
        retires raise it (or a new absorb, whose pieces can go only once written: reported,
        and that retire asks ``need`` afresh). While a reader is at ``told``, then,
        ``need(floor) <= told`` and a retire would hold back what the last one did
        (``told`` None: it held nothing back for a reader). A reader joining or moving to a
        place only lowers ``need``. Whatever else lets a piece go (a write, a piece
        complete, hold-back's end) the absorb's threads report, and each report retires: a
        skipped signal at most leaves such a piece to that report, a moment later.
        """
        if reader not in self._places:
            return
        told = self._told
        was = self._places[reader][0]
        if pos is None:
            self._unset(reader)
        else:
            self._set(reader, pos)
        if self._followed is not None and was == told and not self._at(was):
            self._followed.readers_moved()

    def _set(self, reader: object, pos: int) -> None:
        entry = (pos, id(reader))
        old = self._places.get(reader)
        if old == entry:
            return
        if old is not None:
            self._unset(reader)
        self._places[reader] = entry
        bisect.insort(self._order, entry)

    def _unset(self, reader: object) -> None:
        entry = self._places.pop(reader)
        order = self._order
        del order[bisect.bisect_left(order, entry)]

    def _at(self, pos: int) -> bool:
        """Whether a reader is at ``pos``."""
        order = self._order
        i = bisect.bisect_left(order, (pos,))
        return i < len(order) and order[i][0] == pos
