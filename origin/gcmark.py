"""The mark phase of garbage collection: from a scan of the root, what stays and what may go.

Live manifests of a repository (its *roots* and everything they reach):

* every tag's current target;
* every revision — or, with ``delete_untagged``, only revisions pushed within the grace
  period (a manifest pushed by digest moments before its tag or parent index);
* the children of a live index (transitively), and the referrers of a live manifest (every
  revision whose ``subject`` is live; in the default mode they are revisions, so live anyway).

Live blobs (global): every live manifest's own digest, config, layers and children; every
blob of a live layer link. A repository's layer link is live when a live manifest of that
repository references the blob, when the link was written within the grace period (a blob
uploaded or mounted moments before its manifest arrives), or when the repository has an upload
session in progress and the link was written after that session started minus the grace.

Everything else is a *candidate*: blobs not live (committed before ``now - grace``), dead layer
links, and with ``delete_untagged`` dead revisions, ordered parents first (an index before its
children, a subject before its referrers) so that sparing a parent at sweep time can spare
what it reaches (:meth:`Marked.spare`).

With ``grace = 0``, no uploads and no ``delete_untagged`` the blobs deleted are exactly the
ones registry:2's ``garbage-collect`` deletes (it marks every revision and what it references);
dead layer links are Quayside's addition (registry:2 leaves them behind).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from origin.rootscan import ManifestRefs, RepoScan
from regcore.digest import Digest

RefsOf = Callable[[Digest], ManifestRefs | None]


@dataclass
class RepoMark:
    """The outcome for one repository."""

    name: str
    live_manifests: set[Digest] = field(default_factory=set)
    dead_manifests: list[Digest] = field(default_factory=list)  # parents first
    dead_links: list[Digest] = field(default_factory=list)
    referenced: set[Digest] = field(default_factory=set)  # blobs its live manifests use


@dataclass
class Marked:
    """The whole mark: live digests plus per-repository candidates."""

    live: set[Digest] = field(default_factory=set)
    repos: dict[str, RepoMark] = field(default_factory=dict)
    manifests_marked: int = 0

    def spare(self, repo: str, digest: Digest, refs_of: RefsOf, scan: RepoScan) -> set[Digest]:
        """A dead manifest turned out to be in use (sweep re-check): make it and what it
        reaches live again. Returns the manifests spared (its dead descendants included)."""
        mark = self.repos[repo]
        spared = closure(
            [digest], refs_of, scan, within=set(mark.dead_manifests) | {digest}, referrers=True
        )
        for m in spared:
            mark.live_manifests.add(m)
            self.live.add(m)
            refs = refs_of(m)
            if refs is not None:
                self.live.update(refs.blobs)
                self.live.update(refs.children)
                mark.referenced.update(refs.blobs)
        mark.dead_manifests = [m for m in mark.dead_manifests if m not in spared]
        mark.dead_links = [d for d in mark.dead_links if d not in mark.referenced]
        return spared


def _referrers_map(scan: RepoScan, refs_of: RefsOf) -> dict[Digest, list[Digest]]:
    out: dict[Digest, list[Digest]] = {}
    for digest in scan.revisions:
        refs = refs_of(digest)
        if refs is not None and refs.subject is not None:
            out.setdefault(refs.subject, []).append(digest)
    return out


def closure(
    roots: Iterable[Digest],
    refs_of: RefsOf,
    scan: RepoScan,
    *,
    within: set[Digest] | None = None,
    referrers: bool = True,
) -> set[Digest]:
    """``roots`` plus children (and referrers) reachable from them, optionally only ``within``."""
    by_subject = _referrers_map(scan, refs_of) if referrers else {}
    seen: set[Digest] = set()
    stack = list(roots)
    while stack:
        d = stack.pop()
        if d in seen or (within is not None and d not in within):
            continue
        seen.add(d)
        refs = refs_of(d)
        if refs is not None:
            stack.extend(refs.children)
        stack.extend(by_subject.get(d, ()))
    return seen


def parents_first(dead: set[Digest], refs_of: RefsOf, scan: RepoScan) -> list[Digest]:
    """``dead`` ordered so an index precedes its children and a subject its referrers."""
    by_subject = _referrers_map(scan, refs_of)
    edges: dict[Digest, list[Digest]] = {d: [] for d in dead}
    indegree = dict.fromkeys(dead, 0)
    for d in dead:
        refs = refs_of(d)
        below = [*(refs.children if refs else ()), *by_subject.get(d, ())]
        for child in below:
            if child in dead and child != d:
                edges[d].append(child)
                indegree[child] += 1
    order = sorted((d for d, n in indegree.items() if n == 0), key=str)
    out: list[Digest] = []
    while order:
        d = order.pop(0)
        out.append(d)
        for child in edges[d]:
            indegree[child] -= 1
            if indegree[child] == 0:
                order.append(child)
    out.extend(sorted((d for d in dead if d not in set(out)), key=str))  # cycles: any order
    return out


def mark_repository(
    scan: RepoScan, refs_of: RefsOf, *, now: float, grace: float, delete_untagged: bool
) -> RepoMark:
    """Live manifests, referenced blobs and candidates of one repository."""
    young = now - grace
    roots = {digest for digest, _ in scan.tags.values()}
    if delete_untagged:
        roots |= {d for d, t in scan.revisions.items() if t >= young}
    else:
        roots |= set(scan.revisions)
    live = closure(roots, refs_of, scan)
    mark = RepoMark(scan.name, live_manifests=live)
    for m in live:
        refs = refs_of(m)
        if refs is not None:
            mark.referenced.update(refs.blobs)
    mark.dead_manifests = parents_first(set(scan.revisions) - live, refs_of, scan)
    upload_floor = min(scan.uploads) - grace if scan.uploads else None
    for digest, t in sorted(scan.layers.items(), key=lambda kv: str(kv[0])):
        if digest in mark.referenced or t >= young:
            continue
        if upload_floor is not None and t >= upload_floor:
            continue
        mark.dead_links.append(digest)
    return mark


def mark_all(
    scans: Iterable[RepoScan],
    refs_of: RefsOf,
    *,
    now: float,
    grace: float,
    delete_untagged: bool,
    progress: Callable[[], None] | None = None,
) -> Marked:
    """Mark every repository; ``progress()`` is called after each one."""
    marked = Marked()
    for scan in scans:
        mark = mark_repository(scan, refs_of, now=now, grace=grace, delete_untagged=delete_untagged)
        marked.repos[scan.name] = mark
        marked.manifests_marked += len(mark.live_manifests)
        marked.live |= mark.live_manifests
        marked.live |= mark.referenced
        for m in mark.live_manifests:
            refs = refs_of(m)
            if refs is not None:
                marked.live.update(refs.children)
        dead = set(mark.dead_links)
        marked.live.update(d for d in scan.layers if d not in dead)
        if progress is not None:
            progress()
    return marked
