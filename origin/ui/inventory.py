"""What the UI shows about repositories: sizes, quota use, tags with push and pull times.

The UI asks an :class:`InventorySource` (two methods, rows defined here) and nothing else:

* :class:`OpsInventory` adds what the operations features know (``origin.state.OPS``: unique
  and shared bytes, namespace quota use, recorded pull times), with the definitions of
  :mod:`origin.inventory`;
* :class:`DiskInventory` is the fallback: tags and their push times, the bytes a repository
  holds (blobs linked into it and its manifests, each once); no pull times, no quotas.

Both read the root through one :class:`~origin.ui.inventorycache.InventoryCache` per
application, so a page view does not walk the storage again (how that cache stays correct:
:mod:`origin.ui.inventorycache`).
Pull times are read per shown repository on each view (one small file, not a walk).
Nothing raises for a repository that vanished meanwhile (it is left out, or ``None``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from origin import state
from origin.ui.inventorycache import InventoryCache, latest, namespace_of

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


# -- the fallback: the root's own figures ------------------------------------------------------
class DiskInventory:
    """Tags, push times and held bytes from the cache (see the module docstring)."""

    pulls_recorded = False

    def __init__(self, cache: InventoryCache) -> None:
        self.cache = cache

    async def repositories(self, names: Sequence[str]) -> list[RepoRow]:
        return await asyncio.to_thread(self._rows, list(names))

    async def repository(self, name: str) -> RepoRow | None:
        rows = await asyncio.to_thread(self._rows, [name])
        return rows[0] if rows else None

    def _rows(self, names: list[str]) -> list[RepoRow]:
        out = []
        for name in names:
            entry = self.cache.repo_sync(name)
            if entry is None or not entry.has_manifests:
                continue
            total = sum(size or 0 for size in entry.held.values())
            tags = tuple(
                TagRow(tag, str(digest), pushed, None)
                for tag, (digest, pushed) in sorted(entry.scan.tags.items())
            )
            out.append(RepoRow(name, total, None, None, entry.newest, None, None, tags))
        return out


# -- with the operations features -------------------------------------------------------------
class OpsInventory:
    """Unique/shared bytes, namespace quota use and pull times (the definitions of
    :mod:`origin.inventory`) over the cache, for an application's operations object
    (``ops``: ``config.quotas``, ``pulls_of(name)``)."""

    pulls_recorded = True

    def __init__(self, ops: Any, cache: InventoryCache) -> None:
        self.ops = ops
        self.cache = cache

    async def repositories(self, names: Sequence[str]) -> list[RepoRow]:
        wanted = list(names)
        if not wanted:
            return []
        return await asyncio.to_thread(self._rows, wanted)

    async def repository(self, name: str) -> RepoRow | None:
        rows = await asyncio.to_thread(self._rows, [name])
        return rows[0] if rows else None

    def _rows(self, names: list[str]) -> list[RepoRow]:
        entries, agg = self.cache.aggregate_sync()
        quotas = self.ops.config.quotas
        out = []
        for name in names:
            entry = entries.get(name)
            if entry is None:
                continue
            unique = shared = 0
            for d, size in entry.held.items():
                if size is None:
                    continue
                if agg.holders.get(d, 0) > 1:
                    shared += size
                else:
                    unique += size
            ns = namespace_of(name)
            limit = quotas.limit_for(ns) if quotas is not None else None
            quota = QuotaUse(ns, agg.ns_bytes.get(ns, 0), limit[1] if limit else None)
            pulls = self.ops.pulls_of(name)
            tags = tuple(
                TagRow(tag, str(digest), pushed, pulls.last(digest, tag))
                for tag, (digest, pushed) in sorted(entry.scan.tags.items())
            )
            out.append(
                RepoRow(
                    name=name,
                    total_bytes=unique + shared,
                    unique_bytes=unique,
                    shared_bytes=shared,
                    last_pushed=entry.newest,
                    last_pulled=latest(*pulls.manifests.values(), *pulls.tags.values()),
                    quota=quota,
                    tags=tags,
                )
            )
        return out


def inventory_for(
    app: Mapping[Any, Any], override: InventorySource | None, cache: InventoryCache
) -> InventorySource:
    """``override`` if given; the operations inventory when ``app`` (an application or a
    request's ``config_dict``) has one; else the disk fallback. Both read ``cache``."""
    if override is not None:
        return override
    ops = app.get(state.OPS)
    if ops is not None:
        return OpsInventory(ops, cache)
    return DiskInventory(cache)
