"""Progress of a long maintenance run, readable while it runs (by a CLI progress bar or an
admin endpoint that streams it).

A :class:`Progress` is written by one worker (a thread or a task) and read by others: plain
attribute writes, so a reader may see a phase's new total a moment before its new name, never a
torn value. ``on_change`` (optional) is called after each update, from the writer's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Progress:
    """Phase name, units done and total units of the current phase."""

    def __init__(self, on_change: Callable[[Progress], None] | None = None) -> None:
        self.name = "start"
        self.done = 0
        self.total = 0
        self.on_change = on_change

    def phase(self, name: str, total: int) -> None:
        self.name, self.done, self.total = name, 0, total
        self._changed()

    def step(self, n: int = 1) -> None:
        self.done += n
        self._changed()

    def snapshot(self) -> dict[str, Any]:
        return {"phase": self.name, "done": self.done, "total": self.total}

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)
