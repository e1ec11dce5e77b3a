"""The UI's cache of one storage root: repository names, per-repository scans, blob sizes.

The UI's inventory sources (:mod:`origin.ui.inventory`) read the root through one
:class:`InventoryCache` per application, so a page view does
not walk the storage again (a registry with thousands of repositories or tags would make every
view walk all of them). The cache holds the repository names (:meth:`InventoryCache.catalog`,
the names ``Repositories.catalog`` gives) and, per repository, its scan (tags, revisions and
layer links with their link mtimes) and the sizes of the blobs it holds. It is built lazily
and kept correct by:

* **this process's writes**: :class:`origin.repository.Repositories` calls its listeners
  (here :meth:`InventoryCache.invalidate`) after every link, tag, untag and unlink, whoever
  asked (manifest and blob PUT/DELETE, mounts, upload commits), so the next view rescans that
  repository; garbage collection and retention (:class:`origin.ops.OriginOps`) invalidate
  everything when a run ends, and while one runs (``ops.maintenance`` held) the UI reads the
  disk without caching;
* **changes made outside this process** (a second origin or a registry:2 on the same root, an
  offline ``quayside restore``/``scrub``, files removed by hand): nothing tells this process,
  and registry:2 rewrites an existing ``current/link`` in place (no directory mtime changes),
  so no cheap stat can see every change. An entry is therefore used for at most ``ttl``
  seconds (``quayside.inventory.ui_refresh``) counted from when its scan *started*: a change
  finished outside the process shows on every view starting more than ``ttl`` seconds later.

A scan raced by an invalidation is not trusted (generation numbers taken before it starts).
Nothing raises for a repository that vanished meanwhile (its entry is ``None``, or it is left
out of the aggregate).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from origin.rootscan import RepoScan, scan_repository
from regcore.digest import Digest
from regcore.storage.layout import Layout

__all__ = ["DEFAULT_TTL", "InventoryCache", "RepoEntry", "latest", "namespace_of"]

DEFAULT_TTL = 30.0
"""Seconds a cached scan is trusted against changes made outside this process."""


def namespace_of(name: str) -> str:
    """The namespace of repository ``name``: its first path component."""
    return name.split("/", 1)[0]


def latest(*times: float | None) -> float | None:
    """The newest of the known ``times``; None when none is known."""
    known = [t for t in times if t is not None]
    return max(known) if known else None


@dataclass(frozen=True)
class RepoEntry:
    """One repository as scanned: ``held`` maps every blob linked into it and every manifest
    it holds to its size (None: the blob is missing)."""

    scan: RepoScan
    has_manifests: bool
    held: dict[Digest, int | None]
    newest: float | None  # latest link mtime (tags, revisions, layers)


@dataclass
class _Stamped:
    value: Any
    started: float  # monotonic time the scan began
    gen: tuple[int, int]  # (everything generation, own generation) when it began


@dataclass
class _Aggregate:
    version: int
    holders: dict[Digest, int] = field(default_factory=dict)
    ns_bytes: dict[str, int] = field(default_factory=dict)


class InventoryCache:
    """The UI's view of one root (see the module docstring). Thread-safe: scans run in
    worker threads, invalidations come from the event loop."""

    def __init__(
        self,
        layout: Layout,
        *,
        ttl: float = DEFAULT_TTL,
        busy: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.layout = layout
        self.ttl = ttl
        self.busy = busy  # True while maintenance rewrites the root: read through
        self.clock = clock
        self.scans = 0  # directory walks done (repository scans and catalog walks)
        self._lock = threading.Lock()
        self._all = 0  # bumped by invalidate(None)
        self._gens: dict[str, int] = {}  # per repository, bumped by invalidate(name)
        self._catalog_gen = 0
        self._catalog: _Stamped | None = None  # (catalog names, every repository name)
        self._repos: dict[str, _Stamped] = {}
        self._sizes: dict[Digest, int] = {}  # blob sizes (content-addressed), present ones
        self._sizes_started = clock()
        self._version = 0  # bumped whenever a repository entry is replaced
        self._aggregate: _Aggregate | None = None

    # -- invalidation (event loop) --------------------------------------------------------
    def invalidate(self, name: str | None = None) -> None:
        """``name`` changed on disk (None: anything may have)."""
        with self._lock:
            if name is None:
                self._all += 1
                self._repos.clear()
                self._catalog = None
                self._sizes.clear()
                self._aggregate = None
                return
            self._gens[name] = self._gens.get(name, 0) + 1
            self._repos.pop(name, None)
            self._aggregate = None
            cat = self._catalog
            if cat is not None and name not in cat.value[1]:
                self._catalog_gen += 1  # a new repository: walk again
                self._catalog = None

    def _fresh(self, item: _Stamped | None, gen: tuple[int, int], now: float) -> bool:
        return item is not None and item.gen == gen and now - item.started < self.ttl

    # -- reads (worker threads) -----------------------------------------------------------
    def catalog_sync(self) -> tuple[list[str], list[str]]:
        """(names with ``_manifests``, as ``Repositories.catalog``; every repository:
        ``_manifests``, ``_layers`` or ``_uploads``, as :func:`origin.rootscan.
        list_repositories`)."""
        now = self.clock()
        with self._lock:
            gen = (self._all, self._catalog_gen)
            if not self.busy() and self._fresh(self._catalog, gen, now):
                assert self._catalog is not None
                return self._catalog.value  # type: ignore[no-any-return]
        value = self._walk()
        with self._lock:
            self._catalog = _Stamped(value, now, gen)
        return value

    def _walk(self) -> tuple[list[str], list[str]]:
        with self._lock:
            self.scans += 1
        root = self.layout.repositories
        catalog: list[str] = []
        every: list[str] = []
        for dirpath, dirnames, _ in os.walk(root):
            rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
            if rel != ".":
                if "_manifests" in dirnames:
                    catalog.append(rel)
                hidden = any(part.startswith(".") for part in rel.split("/"))
                if not hidden and {"_manifests", "_layers", "_uploads"} & set(dirnames):
                    every.append(rel)
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        return sorted(catalog), sorted(every)

    def repo_sync(self, name: str) -> RepoEntry | None:
        """The entry of ``name``; None when it cannot be read."""
        now = self.clock()
        with self._lock:
            if now - self._sizes_started >= self.ttl:
                self._sizes.clear()  # a blob removed outside this process
                self._sizes_started = now
            gen = (self._all, self._gens.get(name, 0))
            item = self._repos.get(name)
            if not self.busy() and self._fresh(item, gen, now):
                assert item is not None
                return item.value  # type: ignore[no-any-return]
        entry = self._scan(name, gen[0])
        with self._lock:
            self._repos[name] = _Stamped(entry, now, gen)
            self._version += 1
            self._aggregate = None
        return entry

    def _scan(self, name: str, everything: int) -> RepoEntry | None:
        with self._lock:
            self.scans += 1
        layout = self.layout
        try:
            scan = scan_repository(layout, name)
        except (OSError, ValueError):
            return None
        held: dict[Digest, int | None] = {}
        for digest in (*scan.layers, *scan.revisions):
            held[digest] = self._size(digest, everything)
        newest = latest(
            *(t for _, t in scan.tags.values()), *scan.revisions.values(), *scan.layers.values()
        )
        has_manifests = (layout.repo_dir(name) / "_manifests").is_dir()
        return RepoEntry(scan, has_manifests, held, newest)

    def _size(self, digest: Digest, everything: int) -> int | None:
        size = self._sizes.get(digest)
        if size is not None:
            return size
        try:
            size = os.stat(self.layout.blob_data(digest)).st_size
        except OSError:
            return None  # missing: not remembered, a push may bring it
        with self._lock:
            if self._all == everything:  # not if a collection ended meanwhile
                self._sizes[digest] = size
        return size

    def aggregate_sync(self) -> tuple[dict[str, RepoEntry], _Aggregate]:
        """Every repository's entry, how many repositories hold each blob, and each
        namespace's bytes (unique blobs of its repositories), as :mod:`origin.inventory`."""
        _, every = self.catalog_sync()
        entries: dict[str, RepoEntry] = {}
        for name in every:
            entry = self.repo_sync(name)
            if entry is not None:
                entries[name] = entry
        with self._lock:
            agg = self._aggregate
            if agg is not None and agg.version == self._version and not self.busy():
                return entries, agg
            version = self._version
        agg = _Aggregate(version)
        ns_held: dict[str, set[Digest]] = {}
        sizes: dict[Digest, int] = {}
        for name, entry in entries.items():
            present = {d for d, s in entry.held.items() if s is not None}
            for d in present:
                agg.holders[d] = agg.holders.get(d, 0) + 1
                sizes[d] = entry.held[d] or 0
            ns_held.setdefault(namespace_of(name), set()).update(present)
        agg.ns_bytes = {ns: sum(sizes[d] for d in held) for ns, held in ns_held.items()}
        with self._lock:
            if self._version == version:
                self._aggregate = agg
        return entries, agg

    async def catalog(self) -> list[str]:
        """The repository names (as ``Repositories.catalog``), from the cache."""
        names, _ = await asyncio.to_thread(self.catalog_sync)
        return list(names)
