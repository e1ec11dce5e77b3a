"""What a root holds: repositories, tags, manifests, sizes, push and pull times.

:func:`build_inventory` reads the root (blocking; a worker thread or the CLI) and returns an
:class:`Inventory`. Definitions, shared with quotas (:mod:`origin.quota`):

* a repository *holds* the blobs linked into it (``_layers``) and its manifests (revisions),
  counted once each whatever references them;
* its ``unique_bytes`` are the bytes it holds that no other repository holds, its
  ``shared_bytes`` the bytes it holds that another repository holds too (shared layers);
* a namespace's ``bytes`` are the unique blobs held by any of its repositories (the figure
  quotas are checked against); ``limit`` its quota, if any;
* a manifest's ``size`` is its own bytes plus its config and layers, plus for an index the
  size of each child it holds;
* push time: the tag's ``current/link`` mtime (a manifest's: its revision link's); pull time:
  the latest GET/HEAD of the manifest by digest or tag, as recorded by
  :mod:`origin.pulls` (flushed times only, unless the caller passes pending ones).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from origin.pulls import PullTimes, read_pulls
from origin.quota import namespace_of
from origin.rootscan import RefReader, RepoScan, list_repositories, scan_repository
from regcore.digest import Digest
from regcore.opsconfig import QuotaConfig, glob_regex
from regcore.storage.layout import Layout


@dataclass
class TagInfo:
    tag: str
    digest: str
    pushed: float
    pulled: float | None


@dataclass
class ManifestInfo:
    digest: str
    media_type: str
    size: int
    tags: list[str]
    pushed: float
    pulled: float | None
    children: list[str] = field(default_factory=list)
    subject: str | None = None


@dataclass
class RepoInventory:
    name: str
    namespace: str
    tags: list[TagInfo] = field(default_factory=list)
    manifests: list[ManifestInfo] = field(default_factory=list)
    blobs: int = 0
    unique_bytes: int = 0
    shared_bytes: int = 0
    last_pushed: float | None = None
    last_pulled: float | None = None

    @property
    def total_bytes(self) -> int:
        return self.unique_bytes + self.shared_bytes


@dataclass
class Inventory:
    repositories: list[RepoInventory] = field(default_factory=list)
    namespaces: dict[str, dict[str, int | None]] = field(default_factory=dict)
    stored_bytes: int = 0  # every blob held by any repository, once

    def to_dict(self) -> dict[str, Any]:
        repos = []
        for r in self.repositories:
            d = asdict(r)
            d["total_bytes"] = r.total_bytes
            repos.append(d)
        return {
            "repositories": repos,
            "namespaces": self.namespaces,
            "stored_bytes": self.stored_bytes,
        }


def _size(layout: Layout, digest: Digest, cache: dict[Digest, int | None]) -> int | None:
    if digest not in cache:
        try:
            cache[digest] = os.stat(layout.blob_data(digest)).st_size
        except OSError:
            cache[digest] = None
    return cache[digest]


def _latest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def build_inventory(
    layout: Layout,
    pattern: str | None = None,
    *,
    quotas: QuotaConfig | None = None,
    pulls_of: Callable[[str], PullTimes] | None = None,
) -> Inventory:
    """The inventory of repositories matching glob ``pattern`` (all when None). Blocking.

    Sharing is judged against every repository of the root, matched or not; namespaces are
    reported for the namespaces of the matched repositories."""
    pulls_of = pulls_of or (lambda name: read_pulls(layout, name))
    match = glob_regex(pattern).fullmatch if pattern else None
    sizes: dict[Digest, int | None] = {}
    scans: dict[str, RepoScan] = {}
    holders: dict[Digest, int] = {}
    held: dict[str, set[Digest]] = {}
    for name in list_repositories(layout):
        try:
            scans[name] = scan = scan_repository(layout, name)
        except OSError:
            continue
        digests = {
            d for d in (*scan.layers, *scan.revisions) if _size(layout, d, sizes) is not None
        }
        held[name] = digests
        for d in digests:
            holders[d] = holders.get(d, 0) + 1
    refs = RefReader(layout)
    inv = Inventory()
    ns_held: dict[str, set[Digest]] = {}
    for name, scan in scans.items():
        if match is not None and not match(name):
            continue
        repo = _repository(layout, scan, refs, sizes, pulls_of(name))
        for d in held[name]:
            size = sizes[d] or 0
            if holders[d] > 1:
                repo.shared_bytes += size
            else:
                repo.unique_bytes += size
        repo.blobs = len(held[name])
        ns_held.setdefault(repo.namespace, set()).update(held[name])
        inv.repositories.append(repo)
    for ns, digests in sorted(ns_held.items()):
        limit = quotas.limit_for(ns) if quotas is not None else None
        inv.namespaces[ns] = {
            "bytes": sum(sizes[d] or 0 for d in digests),
            "limit": limit[1] if limit else None,
        }
    everything = set().union(*ns_held.values()) if ns_held else set()
    inv.stored_bytes = sum(sizes[d] or 0 for d in everything)
    return inv


def _repository(
    layout: Layout,
    scan: RepoScan,
    refs: RefReader,
    sizes: dict[Digest, int | None],
    pulls: PullTimes,
) -> RepoInventory:
    repo = RepoInventory(scan.name, namespace_of(scan.name))
    tagged = scan.tagged()
    for tag, (digest, pushed) in sorted(scan.tags.items()):
        repo.tags.append(TagInfo(tag, str(digest), pushed, pulls.last(digest, tag)))

    def total(digest: Digest, depth: int = 0) -> int:
        got = refs(digest)
        if got is None:
            return 0
        n = got.size + sum(_size(layout, b, sizes) or 0 for b in got.blobs)
        if depth < 4:
            n += sum(total(c, depth + 1) for c in got.children if c in scan.revisions)
        return n

    for digest, pushed in sorted(scan.revisions.items(), key=lambda kv: -kv[1]):
        got = refs(digest)
        tags = tagged.get(digest, [])
        pulled = _latest(pulls.last(digest), *(pulls.tags.get(t) for t in tags))
        repo.manifests.append(
            ManifestInfo(
                digest=str(digest),
                media_type=got.media_type if got else "",
                size=total(digest),
                tags=tags,
                pushed=pushed,
                pulled=pulled,
                children=[str(c) for c in got.children] if got else [],
                subject=str(got.subject) if got and got.subject else None,
            )
        )
    repo.last_pushed = _latest(
        *(t for _, t in scan.tags.values()), *scan.revisions.values(), *scan.layers.values()
    )
    repo.last_pulled = _latest(*pulls.manifests.values(), *pulls.tags.values())
    return repo
