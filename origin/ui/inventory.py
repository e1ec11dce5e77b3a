"""What the UI shows about repositories: sizes, quota use, tags with push and pull times.

The UI asks an :class:`InventorySource` (two methods, rows defined here) and nothing else:

* :class:`OpsInventory` adapts the origin's inventory (:mod:`origin.inventory`, built by the
  operations features: unique and shared bytes, namespace quota use, recorded pull times) when
  the application has them (``origin.state.OPS``);
* :class:`DiskInventory` is the fallback: it reads the root itself (tags and their push times
  from the tag links' mtimes, the bytes a repository holds: blobs linked into it and its
  manifests, each once) and knows no pull times and no quotas.

:func:`inventory_for` picks one per request, so the order of wiring does not matter. Both
read the disk in a worker thread; neither raises for a repository that vanished meanwhile
(it is left out, or ``None``).
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from origin import state
from regcore import errors
from regcore.digest import Digest
from regcore.storage.layout import Layout

__all__ = [
    "DiskInventory",
    "InventorySource",
    "OpsInventory",
    "QuotaUse",
    "RepoRow",
    "TagRow",
    "inventory_for",
]


@dataclass(frozen=True, slots=True)
class TagRow:
    tag: str
    digest: str
    pushed: float | None
    pulled: float | None


@dataclass(frozen=True, slots=True)
class QuotaUse:
    """Bytes stored by a namespace and its limit (None: no quota applies)."""

    namespace: str
    used: int
    limit: int | None

    @property
    def percent(self) -> float | None:
        return None if not self.limit else min(100.0, 100.0 * self.used / self.limit)


@dataclass(frozen=True, slots=True)
class RepoRow:
    """One repository. ``unique_bytes``/``shared_bytes`` are None when the source cannot tell
    (the disk fallback); ``quota`` None when no quota figures are known."""

    name: str
    total_bytes: int
    unique_bytes: int | None
    shared_bytes: int | None
    last_pushed: float | None
    last_pulled: float | None
    quota: QuotaUse | None
    tags: tuple[TagRow, ...]


class InventorySource(Protocol):
    """Where the UI's repository figures come from."""

    #: whether pull times are recorded (else the UI says "not recorded", not "never")
    pulls_recorded: bool

    async def repositories(self, names: Sequence[str]) -> list[RepoRow]:
        """Rows for those of ``names`` that exist, in the order given."""
        ...

    async def repository(self, name: str) -> RepoRow | None:
        """The row of ``name`` with its tags; None if it does not exist."""
        ...


def namespace_of(name: str) -> str:
    return name.split("/", 1)[0]


# -- the fallback: reading the root ----------------------------------------------------------
class DiskInventory:
    """Reads the registry tree (see the module docstring)."""

    pulls_recorded = False

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    async def repositories(self, names: Sequence[str]) -> list[RepoRow]:
        return await asyncio.to_thread(self._rows, list(names))

    async def repository(self, name: str) -> RepoRow | None:
        rows = await asyncio.to_thread(self._rows, [name])
        return rows[0] if rows else None

    def _rows(self, names: list[str]) -> list[RepoRow]:
        sizes: dict[Digest, int] = {}
        out = []
        for name in names:
            row = self._row(name, sizes)
            if row is not None:
                out.append(row)
        return out

    def _row(self, name: str, sizes: dict[Digest, int]) -> RepoRow | None:
        layout = self.layout
        if not (layout.repo_dir(name) / "_manifests").is_dir():
            return None
        held: set[Digest] = set()
        newest: float | None = None
        for base in (layout.layers_dir(name), layout.revisions_dir(name)):
            for digest, mtime in _links(base):
                held.add(digest)
                newest = mtime if newest is None else max(newest, mtime)
        total = 0
        for digest in held:
            if digest not in sizes:
                try:
                    sizes[digest] = os.stat(layout.blob_data(digest)).st_size
                except OSError:
                    sizes[digest] = 0
            total += sizes[digest]
        tags = []
        for tag in _names(layout.tags_dir(name)):
            link = layout.tag_current_link(name, tag)
            digest, mtime = _read_link(link)
            if digest is None:
                continue
            tags.append(TagRow(tag, str(digest), mtime, None))
            newest = mtime if newest is None else max(newest, mtime or 0.0)
        return RepoRow(name, total, None, None, newest, None, None, tuple(tags))


def _names(path: Any) -> list[str]:
    try:
        return sorted(n for n in os.listdir(path) if not n.startswith("."))
    except OSError:
        return []


def _read_link(path: Any) -> tuple[Digest | None, float | None]:
    try:
        text = path.read_text().strip()
        mtime = os.stat(path).st_mtime
    except OSError:
        return None, None
    try:
        return Digest.parse(text), mtime
    except errors.RegistryError:
        return None, None


def _links(base: Any) -> list[tuple[Digest, float]]:
    out = []
    for alg in _names(base):
        for hexdir in _names(base / alg):
            digest, mtime = _read_link(base / alg / hexdir / "link")
            if digest is not None and mtime is not None and digest.hex == hexdir:
                out.append((digest, mtime))
    return out


# -- the operations features' inventory ---------------------------------------------------------
class OpsInventory:
    """Adapts ``origin.inventory.build_inventory`` (unique/shared bytes, quotas, pull times)
    of an application's operations object (``ops``: ``layout``, ``config.quotas``,
    ``pulls_of(name)``)."""

    pulls_recorded = True

    def __init__(self, ops: Any, build: Any) -> None:
        self.ops = ops
        self._build = build

    async def repositories(self, names: Sequence[str]) -> list[RepoRow]:
        wanted = list(names)
        if not wanted:
            return []
        inv = await asyncio.to_thread(self._inventory)
        return self._rows(inv, wanted)

    async def repository(self, name: str) -> RepoRow | None:
        inv = await asyncio.to_thread(self._inventory)
        rows = self._rows(inv, [name])
        return rows[0] if rows else None

    def _inventory(self) -> Any:
        return self._build(
            self.ops.layout, None, quotas=self.ops.config.quotas, pulls_of=self.ops.pulls_of
        )

    @staticmethod
    def _rows(inv: Any, names: list[str]) -> list[RepoRow]:
        by_name = {r.name: r for r in inv.repositories}
        out = []
        for name in names:
            r = by_name.get(name)
            if r is None:
                continue
            ns = inv.namespaces.get(r.namespace) or {}
            quota = (
                QuotaUse(r.namespace, int(ns.get("bytes") or 0), ns.get("limit")) if ns else None
            )
            tags = tuple(TagRow(t.tag, str(t.digest), t.pushed, t.pulled) for t in r.tags)
            out.append(
                RepoRow(
                    name=r.name,
                    total_bytes=int(r.total_bytes),
                    unique_bytes=int(r.unique_bytes),
                    shared_bytes=int(r.shared_bytes),
                    last_pushed=r.last_pushed,
                    last_pulled=r.last_pulled,
                    quota=quota,
                    tags=tags,
                )
            )
        return out


def inventory_for(app: Mapping[Any, Any], override: InventorySource | None) -> InventorySource:
    """``override`` if given; the operations inventory when ``app`` (an application or a
    request's ``config_dict``) has one; else the disk fallback."""
    if override is not None:
        return override
    ops_key = getattr(state, "OPS", None)
    ops = app.get(ops_key) if ops_key is not None else None
    if ops is not None:
        try:
            build = importlib.import_module("origin.inventory").build_inventory
        except (ImportError, AttributeError):
            build = None
        if build is not None:
            return OpsInventory(ops, build)
    return DiskInventory(app[state.LAYOUT])
