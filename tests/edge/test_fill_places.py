"""Where a fill's readers are: ``need(floor)`` and when the absorb is told they moved.

:class:`edge.fillstate.Fill` tells the staged blob (its ``followed``) where its readers are,
so an absorb can hold a piece in memory while a reader still sends from it
(:mod:`regcore.storage.absorb`, hold-back):

- ``need(floor)``, the lowest place from ``floor`` on (readers behind ``floor`` ignored),
  is what a brute-force minimum over the readers says, whatever the readers did;
- ``readers_moved()`` comes only when the last reader at ``need``'s last answer moves on or
  leaves: readers of a herd ahead of its slowest one move without waking the absorb;
- and that loses nothing: against a model of the absorb's retire (each retire asks
  ``need`` once and lets pieces go only up to the answer; what the threads change they
  report), after every step a retire would let nothing more go than it already did
  (hypothesis, and a seeded sweep that meets rarer cases).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge.fillstate import LIVE_SPAN, Fill
from regcore.digest import Digest

DIGEST = Digest.of(b"places")
READERS = 6  # few, so that hypothesis makes them meet (ties) and overtake each other
PLACES = 40  # offsets 0..PLACES-1 (small: ties and pieces' ends are hit often)
PIECE = 4  # the model absorb's piece, in those offsets

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def brute_need(places: dict[int, int], floor: int) -> int | None:
    """What ``need(floor)`` must say: the old ``min()`` over every reader's place."""
    return min((p for p in places.values() if p >= floor), default=None)


def new_fill() -> Fill:
    """A Fill made outside any test loop (it wants one running when made; its readers'
    places, all that is used here, need none)."""

    async def make() -> Fill:
        return Fill(DIGEST)

    return asyncio.run(make())


class Counting:
    """A ``followed`` that counts ``readers_moved`` and asks ``need`` then, as a retire does."""

    def __init__(self) -> None:
        self.need: Callable[[int], int | None] | None = None
        self.moved = 0

    def follow(self, need: Callable[[int], int | None]) -> None:
        self.need = need

    def readers_moved(self) -> None:
        self.moved += 1
        assert self.need is not None
        self.need(0)  # the oldest live piece starts at 0 here


# -- need(floor) against the brute-force minimum ---------------------------------------------

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("at"), st.integers(0, READERS - 1), st.integers(0, PLACES - 1)),
        st.tuples(st.just("move"), st.integers(0, READERS - 1), st.integers(0, PLACES - 1)),
        st.tuples(st.just("leave"), st.integers(0, READERS - 1), st.just(0)),
        st.tuples(st.just("need"), st.just(0), st.integers(-1, PLACES + 1)),
    ),
    max_size=80,
)


@SETTINGS
@given(_steps)
def test_need_is_the_lowest_place_from_the_floor_on(steps: list[tuple[str, int, int]]) -> None:
    """Any joins, moves (either way), leaves and floors: ``need`` answers what the brute
    force does, and the sorted entries are exactly the readers' places."""
    fill = new_fill()
    fill._followed = Counting()  # signals on: _moved's bookkeeping runs in full
    fill._followed.follow(fill._need)
    readers = [object() for _ in range(READERS)]
    places: dict[int, int] = {}
    for op, r, value in steps:
        if op == "at":
            fill._place(readers[r], value)
            places[r] = value
        elif op == "move":
            fill._moved(readers[r], value)  # a reader not there: nothing happens
            if r in places:
                places[r] = value
        elif op == "leave":
            fill._moved(readers[r], None)
            places.pop(r, None)
        else:
            assert fill._need(value) == brute_need(places, value), (places, value)
        assert fill._order == sorted((p, id(readers[r])) for r, p in places.items())
        assert len(fill._places) == len(places)
    for floor in range(-1, PLACES + 2):
        assert fill._need(floor) == brute_need(places, floor)


async def test_need_with_no_reader_and_with_every_reader_behind_the_floor() -> None:
    fill = Fill(DIGEST)
    assert fill._need(0) is None
    a, b = object(), object()
    fill._place(a, 5)
    fill._place(b, 5)
    assert fill._need(0) == 5 and fill._need(5) == 5 and fill._need(6) is None
    fill._moved(a, None)
    assert fill._need(0) == 5  # b is still there
    fill._moved(b, None)
    assert fill._need(0) is None and not fill._places and not fill._order


# -- readers_moved: only when the slowest reader the absorb knows of moves -----------------


async def test_a_herd_ahead_of_its_slowest_reader_moves_without_waking_the_absorb(
    tmp_path: Path,
) -> None:
    """49 readers stream 16 MiB past a 50th that stays at offset 0 (its first span not sent
    yet). The absorb asked ``need(0)`` and was told 0: none of the 49 readers' 16 moves nor
    their leaving can let a piece go, so none of them signals (every one of them did before:
    800+ calls, each a retire). The slow reader leaving does."""
    total, end = 20 * (1 << 20), 16 * (1 << 20) - 1  # end before FINAL_HOLD: no commit wait
    path = tmp_path / "blob"
    with path.open("wb") as f:
        f.truncate(total)
    followed = Counting()
    fill = Fill(DIGEST)
    fill.announce(total)
    fill.open(total, path, followed=followed)
    fill.advance(total)

    slow = fill.spans(0, end)
    _fd, offset, count = await slow.__anext__()  # joined at 0, sending its first span
    assert (offset, count) == (0, LIVE_SPAN)
    assert followed.need is not None and followed.need(0) == 0  # a retire asks: told 0

    async def stream() -> int:
        sent = 0
        async for _fd, offset, count in fill.spans(0, end):
            assert offset == sent and count <= LIVE_SPAN
            sent += count
        return sent

    sent = await asyncio.gather(*(stream() for _ in range(49)))
    assert sent == [end + 1] * 49
    assert followed.moved == 0, f"{followed.moved} readers_moved() for moves ahead of 0"
    assert fill._need(0) == 0 and fill.readers == 1

    await slow.aclose()  # the reader at told leaves: pieces it held may go now
    assert followed.moved == 1
    assert fill._need(0) is None and fill.readers == 0


async def test_the_last_reader_at_the_answer_signals_and_a_tie_does_not() -> None:
    fill = Fill(DIGEST)
    followed = Counting()
    fill._followed = followed
    followed.follow(fill._need)
    a, b, c = object(), object(), object()
    fill._place(a, 0)
    fill._place(b, 0)
    fill._place(c, 3)
    fill._moved(c, 4)
    assert followed.moved == 0  # nothing asked yet: no piece is held for a reader
    assert fill._need(0) == 0
    fill._moved(a, 2)
    assert followed.moved == 0  # b is still at 0: need(floor) is what it was
    fill._moved(b, 1)
    assert followed.moved == 1  # the last reader at 0: the retire asks again, told 1
    fill._moved(c, 5)
    assert followed.moved == 1  # ahead of the answer
    fill._moved(b, None)
    assert followed.moved == 2 and fill._need(0) == 2
    fill._followed = None  # committed or failed: nobody to tell
    fill._moved(a, None)
    assert followed.moved == 2


# -- nothing is lost: a model of the absorb's retire -----------------------------------------


class ModelAbsorb:
    """The absorb's live window as :meth:`regcore.storage.absorb.Absorber._retire` sees it:
    contiguous pieces of :data:`PIECE` offsets, the oldest first. A piece the threads are
    done with (written, and a newer one complete) is ``ready``; the threads report each such
    change, and a report retires. A retire asks ``need(floor)`` once (while holding back)
    and lets the oldest piece go while it is ready and ends at or before the answer."""

    def __init__(self) -> None:
        self.pieces: list[list[int]] = []  # [start, ready]
        self.next = 0
        self.holding = True
        self.need: Callable[[int], int | None] | None = None
        self.retires = 0

    def follow(self, need: Callable[[int], int | None]) -> None:
        self.need = need

    def readers_moved(self) -> None:
        self.retire()

    def retire(self, need: Callable[[int], int | None] | None = None) -> int:
        """Let pieces go; returns how many (``need``: ask it instead of the fill's)."""
        self.retires += 1
        ask = need or self.need
        answer = None
        if ask is not None and self.holding and self.pieces:
            answer = ask(self.pieces[0][0])
        gone = 0
        while self.pieces and self.pieces[0][1] and sum(r for _, r in self.pieces) > 1:
            if answer is not None and answer < self.pieces[0][0] + PIECE:
                break
            self.pieces.pop(0)
            gone += 1
        return gone

    def would_let_go(self, places: dict[int, int]) -> int:
        """What a retire would let go now, asking the brute force (the fill's ``need`` is
        not asked: that would tell the fill what the absorb never asked)."""
        saved = [list(p) for p in self.pieces]
        gone = self.retire(lambda floor: brute_need(places, floor))
        self.retires -= 1
        self.pieces = saved
        return gone


def run_model(steps: list[tuple[int | str, ...]]) -> None:
    """Play ``steps`` on a fill followed by a :class:`ModelAbsorb`; after every step, a
    retire (as the old fill asked after every move) would let nothing go. Readers join near
    the window's head; a move or a leave picks one of the readers there."""
    fill = new_fill()
    absorb = ModelAbsorb()
    fill._followed = absorb
    absorb.follow(fill._need)
    places: dict[object, int] = {}  # reader -> place, in the order they joined
    for step in steps:
        op, *args = step
        if op == "join" and len(places) < READERS:
            reader, places[reader] = object(), max(0, absorb.next - args[0])
            fill._place(reader, places[reader])
        elif op in ("move", "leave") and places:
            reader = list(places)[args[0] % len(places)]
            if op == "move":
                places[reader] += args[1]
                fill._moved(reader, places[reader])
            else:
                del places[reader]
                fill._moved(reader, None)
        elif op == "piece":
            for _ in range(args[0]):
                absorb.pieces.append([absorb.next, False])
                absorb.next += PIECE
        elif op == "report":  # the oldest pieces not ready yet are written
            for piece in [p for p in absorb.pieces if not p[1]][: args[0]]:
                piece[1] = True
            absorb.retire()
        elif op == "ended":  # finish(): the whole window goes, need not asked
            absorb.pieces.clear()
            absorb.holding = True
        elif op == "let_go":
            absorb.holding = False
            absorb.retire()
        left = absorb.would_let_go(dict(enumerate(places.values())))
        assert left == 0, (step, list(places.values()), absorb.pieces)


_join = st.tuples(st.just("join"), st.integers(0, 4 * PIECE))  # this far behind the head
_move = st.tuples(st.just("move"), st.integers(0, READERS - 1), st.integers(1, 2 * PIECE))
_absorb_steps = st.lists(
    st.one_of(
        _join,
        _join,
        _move,
        _move,
        _move,
        st.tuples(st.just("leave"), st.integers(0, READERS - 1)),
        st.tuples(st.just("piece"), st.integers(1, 3)),  # received: no report yet
        st.tuples(st.just("report"), st.integers(0, 3)),  # that many written, reported
        st.tuples(st.just("report"), st.integers(0, 3)),
        st.tuples(st.just("ended"), st.just(0)),  # the absorb is over; the next starts
        st.tuples(st.just("let_go"), st.just(0)),  # HOLD_GRACE ran out
    ),
    max_size=60,
)

TRAP = [("piece", 3), ("join", 6), ("report", 3), ("join", 10), ("move", 0, 4)]
"""Pieces 0, 4, 8 and a reader at 6: the retire lets piece 0 go (its floor is now 4) and
is told 6. Another reader joins at 2, behind that floor but ahead of the floor asked (0):
when the one at 6 moves on, piece 4 may go, though the lowest place from 0 on (2) did not
change. A fill that signalled only for the lowest place from the last floor asked missed
it; random sequences meet this about once in a thousand."""


@SETTINGS
@example(TRAP)
@given(_absorb_steps)
def test_a_skipped_signal_never_leaves_a_piece_held_for_a_reader_that_moved_on(
    steps: list[tuple[int | str, ...]],
) -> None:
    run_model(steps)


def _random_steps(rng: random.Random) -> list[tuple[int | str, ...]]:
    steps: list[tuple[int | str, ...]] = []
    for _ in range(rng.randint(1, 40)):
        k = rng.random()
        if k < 0.2:
            steps.append(("join", rng.randint(0, 4 * PIECE)))
        elif k < 0.5:
            steps.append(("move", rng.randrange(READERS), rng.randint(1, 2 * PIECE)))
        elif k < 0.6:
            steps.append(("leave", rng.randrange(READERS)))
        elif k < 0.75:
            steps.append(("piece", rng.randint(1, 3)))
        elif k < 0.95:
            steps.append(("report", rng.randint(0, 3)))
        elif k < 0.98:
            steps.append(("ended", 0))
        else:
            steps.append(("let_go", 0))
    return steps


def test_a_skipped_signal_loses_nothing_over_many_seeded_sequences() -> None:
    """The same property over 10,000 seeded sequences: cases as rare as :data:`TRAP` are
    met by chance here (hypothesis' few hundred examples seldom do)."""
    for seed in range(10_000):
        steps = _random_steps(random.Random(seed))
        try:
            run_model(steps)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {steps}") from exc
