"""What ``quayside backup|restore|scrub|replicate`` share: finding the storage root, a rich
progress bar behind :class:`origin.snapshot.Progress`, and printing a report.

Not a command module (it has no ``command``): imported by those that are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import rich_click as click

__all__ = ["RichProgress", "load_config", "print_report", "resolve_root", "rich_progress"]


def load_config(config: str | None, root: str | None) -> Any:
    """The origin's :class:`regcore.config.OriginConfig` (file, ``REGISTRY_*`` environment,
    ``--root``). Raises click.UsageError naming the bad key."""
    from regcore.config import ConfigError, load_origin_config

    try:
        return load_origin_config(
            config, os.environ, {"storage.filesystem.rootdirectory": root} if root else None
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def resolve_root(config: str | None, root: str | None) -> str:
    """``--root``, else the config's ``storage.filesystem.rootdirectory`` (file or
    ``REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY``), else ``./data/origin``."""
    if root:
        return root
    return str(load_config(config, None).storage.rootdirectory)


class RichProgress:
    """An :class:`origin.snapshot.Progress` drawing one rich bar per phase on stderr."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._task: Any = None

    def phase(self, name: str, total: int, *, unit: str = "bytes") -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=self._total)
        self._total = max(total, 0)
        self._task = self._progress.add_task(name, total=self._total, unit=unit)

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)


@contextmanager
def rich_progress(enabled: bool = True) -> Iterator[RichProgress]:
    """A :class:`RichProgress` on stderr (hidden when ``enabled`` is False, e.g. ``--json``)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        Task,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class AmountColumn(ProgressColumn):
        """Bytes as sizes (12.3/40.0 MB), other units as counts (3/5 repositories)."""

        def __init__(self) -> None:
            super().__init__()
            self._bytes = DownloadColumn()

        def render(self, task: Task) -> Text:
            unit = task.fields.get("unit", "bytes")
            if unit == "bytes":
                return self._bytes.render(task)
            total = "?" if task.total is None else f"{task.total:.0f}"
            return Text(f"{task.completed:.0f}/{total} {unit}", style="progress.download")

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        AmountColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
    with progress:
        yield RichProgress(progress)


def print_report(report: Any, as_json: bool, render: Callable[[dict[str, Any]], list[str]]) -> None:
    """The report as one JSON object on stdout (``--json``) or as the lines ``render`` makes."""
    data = report.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=1, sort_keys=True))
        return
    for line in render(data):
        click.echo(line)
