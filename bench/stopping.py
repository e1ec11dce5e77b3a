"""SIGTERM and SIGHUP end a bench run the way Ctrl-C does: through its cleanup.

Without a handler, SIGTERM (``timeout``, systemd, a CI cancel) and SIGHUP kill the bench on the
spot; nothing in a ``finally`` runs, so the servers it started in their own sessions, the WAN
relays, the network namespaces and the temp dir outlive it. :func:`terminate_like_ctrl_c`
installs handlers that raise :class:`Terminated` in the main thread instead. It subclasses
:class:`KeyboardInterrupt`, so every ``except KeyboardInterrupt`` and ``finally`` that cleans up
after Ctrl-C handles it too, and no ``except Exception`` swallows it.

Guarantees:
- only the first signal raises; later ones (a second SIGTERM, systemd signalling the whole
  cgroup) are noted and ignored, so they never cut the cleanup short (SIGKILL still ends it);
- a signal that arrives inside :func:`teardown` (stopping servers, deleting namespaces) is held
  until the teardown is done, then raised: a teardown is never left half done by it;
- the previous handlers are restored when the ``with`` block ends; outside the main thread
  nothing is installed (Python runs signal handlers only there);
- the handlers are Python functions, never ``SIG_IGN``: children started meanwhile get the
  default disposition back at exec, so the servers still stop on SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The run was told to stop by ``signum`` (SIGTERM or SIGHUP); handled like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_status(self) -> int:
        """128 + the signal number, as a shell reports a process killed by it (143: SIGTERM)."""
        return 128 + self.signum


class _State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.active = False  # handlers installed
        self.raised: Terminated | None = None  # the signal that already raised
        self.held: int | None = None  # a signal that arrived inside a teardown
        self.teardown_depth = 0

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.raised is not None or self.held is not None:
            return  # already on the way out: let the cleanup finish
        if self.teardown_depth > 0:
            self.held = signum
            return
        self.raised = Terminated(signum)
        raise self.raised


_STATE = _State()


def received() -> str | None:
    """The name of the termination signal received so far (raised, or held by a
    :func:`teardown` still running), or None."""
    if _STATE.raised is not None:
        return _STATE.raised.name
    return None if _STATE.held is None else signal.Signals(_STATE.held).name


@contextlib.contextmanager
def terminate_like_ctrl_c(signals: Sequence[int] = SIGNALS) -> Iterator[None]:
    """While the body runs, ``signals`` raise :class:`Terminated` (see the module docstring)."""
    if threading.current_thread() is not threading.main_thread() or _STATE.active:
        yield
        return
    previous = {sig: signal.signal(sig, _STATE.handle) for sig in signals}
    _STATE.active = True
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _STATE.reset()


@contextlib.contextmanager
def teardown() -> Iterator[None]:
    """Hold a termination signal during the body; raise it (as :class:`Terminated`) after.

    Wrap ``finally`` blocks that stop processes or delete namespaces in it. Does nothing
    special when no handlers are installed (e.g. the suite driven from a test)."""
    _STATE.teardown_depth += 1
    try:
        yield
    finally:
        _STATE.teardown_depth -= 1
        if _STATE.teardown_depth == 0 and _STATE.held is not None and _STATE.raised is None:
            _STATE.raised = Terminated(_STATE.held)
            _STATE.held = None
            raise _STATE.raised
