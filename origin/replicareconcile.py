"""Reconcile of one replication target: find and repair drift between the local repositories
and the target, tag by tag (:class:`TargetReconciler`, reporting in :class:`ReconcileReport`).

Guarantees:

- :meth:`TargetReconciler.reconcile` compares every tag of the local repositories matching the
  target's globs with the target (``HEAD``, by content as
  :class:`~origin.replicapush.TargetPusher` compares, so a sha512 manifest stored
  under sha256 there is not pushed again on every run) and pushes what differs; with ``replicate_deletes``
  it also removes tags the target has and the local repository does not (each as
  :meth:`~origin.replicapush.TargetPusher.delete` removes a tag, so a manifest the origin still has, say the
  child of a tagged index, stays), and the manifest such a tag named when the local
  repository no longer has it (as a delete by digest). Then it compares the
  referrers of every tagged manifest (and of the children of a tagged index, and referrers of
  referrers) and pushes what the target does not list, or removes what it lists and the
  origin does not have (:mod:`origin.replicareferrers`). On a target without the referrers
  API, tags of the form ``sha256-<hex>`` (or ``sha384-``/``sha512-`` and 64 hex digits) are
  those indexes: the tag walk leaves them to the
  referrers part (neither copied over nor deleted as extra tags); with ``replicate_deletes``
  the index of a subject the local repository no longer has is removed
  (``indexes_repaired``), also for sha512 subjects, whose tags (``sha512-`` and the first 64
  of 128 hex digits, as the spec truncates them) name a digest prefix only.
- ``dry_run`` finds only: the report names what would have been done; nothing is pushed or
  deleted.
- Each failure (one tag, or one repository's extra-tag walk) is recorded in
  ``ReconcileReport.failed`` and the walk goes on.

Pushes and deletes go through the target's :class:`~origin.replicapush.TargetPusher`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from origin.replicaindex import fallback_prefix, fallback_subject, fallback_tag, is_fallback_tag
from origin.replicapush import TargetPusher, matches, same_content
from origin.replicareferrers import ReferrerSync
from origin.repository import child_names
from origin.snapshot import NoProgress, Progress, list_repositories, read_repository
from regcore import errors
from regcore.digest import Digest

__all__ = ["ReconcileReport", "TargetReconciler"]

_PROBE = Digest.of(b"")  # any digest tells whether the target answers the referrers API


@dataclass
class ReconcileReport:
    """One target's reconcile: ``pushed``/``deleted`` name tags (``repo:tag``),
    ``referrers_pushed``/``referrers_deleted`` referrers (``repo@digest``, see
    :mod:`origin.replicareferrers`), ``indexes_repaired`` referrers tag schema indexes
    rewritten or removed (``repo:sha256-<hex>``, ``repo:sha512-<first 64 hex>``); with ``dry_run`` what would have been done."""

    target: str
    repositories: int = 0
    tags_checked: int = 0
    pushed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    referrers_checked: int = 0
    referrers_pushed: list[str] = field(default_factory=list)
    referrers_deleted: list[str] = field(default_factory=list)
    indexes_repaired: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__) | {"ok": self.ok}


class TargetReconciler:
    """Drift repair for the target of ``pusher`` (see the module docstring)."""

    def __init__(self, pusher: TargetPusher) -> None:
        self.pusher = pusher
        self.target = pusher.target
        self.layout = pusher.layout
        self.client = pusher.client
        self.referrers = pusher.referrers
        self._referrer_sync = ReferrerSync(pusher)

    def _bytes(self, repo: str, digest: Digest) -> bytes:
        """:meth:`~origin.replicapush.TargetPusher.local_manifest`, or no bytes when the repository lacks it (blocking)."""
        return self.pusher.local_manifest(repo, digest) or b""

    async def _remote_tags(self, repo: str) -> list[str]:
        out: list[str] = []
        last: str | None = None
        with contextlib.suppress(errors.NameUnknown):
            while True:
                page, link = await self.client.list_tags(repo, n=1000, last=last)
                out.extend(page)
                if not link or not page:
                    break
                last = page[-1]
        return out

    async def reconcile(
        self,
        *,
        repo_glob: str | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> ReconcileReport:
        """Find and repair drift for every local repository the target takes (``dry_run``:
        find only)."""
        report = ReconcileReport(self.target.name, dry_run=dry_run)
        names = [
            r
            for r in await asyncio.to_thread(list_repositories, self.layout)
            if matches(self.target, r) and (not repo_glob or fnmatchcase(r, repo_glob))
        ]
        progress = progress or NoProgress()
        progress.phase(f"reconciling {self.target.name}", len(names), unit="repositories")
        for repo in names:
            progress.advance(1)
            report.repositories += 1
            state = await asyncio.to_thread(read_repository, self.layout, repo)
            for tag, digest in sorted(state.tags.items()):
                try:
                    if await self._index_owned(repo, tag, digest):
                        continue
                    report.tags_checked += 1
                    remote = await self.pusher.remote_digest(repo, tag)
                    if remote == str(digest) or (
                        remote is not None
                        and not remote.startswith(f"{digest.algorithm}:")
                        and same_content(
                            remote, digest, await asyncio.to_thread(self._bytes, repo, digest)
                        )
                    ):
                        continue
                    if not dry_run:
                        await self.pusher.push_manifest(repo, digest, tag)
                    report.pushed.append(f"{repo}:{tag}")
                except errors.RegistryError as exc:
                    report.failed.append({"ref": f"{repo}:{tag}", "error": _brief(exc)})
            await self._referrer_sync.reconcile(repo, state, report, dry_run)
            if not self.target.replicate_deletes:
                continue
            try:
                extra, indexes = [], []
                for t in await self._remote_tags(repo):
                    if await self._index_owned(repo, t, None):
                        indexes.append(t)
                    elif t not in state.tags:
                        extra.append(t)
                for tag in extra:
                    if not dry_run:
                        await self._remove_extra_tag(repo, tag)
                    report.deleted.append(f"{repo}:{tag}")
                await self._orphaned_indexes(repo, indexes, report, dry_run)
            except errors.RegistryError as exc:
                report.failed.append({"ref": repo, "error": _brief(exc)})
        return report

    async def _remove_extra_tag(self, repo: str, tag: str) -> None:
        """Remove ``tag``, which the local repository does not have, from the target (only that
        tag, :meth:`~origin.replicapush.TargetPusher.delete`); then the manifest it named too when the local repository no
        longer has that manifest (deleted on the origin while no job carried the delete). Any
        other tag still on that manifest is one the local repository lacks as well, an extra
        tag of this same walk."""
        current = await self.pusher.remote_digest(repo, tag)
        await self.pusher.delete(repo, None, tag)
        if current is None:
            return
        manifest = Digest.parse(current)
        if await asyncio.to_thread(self.pusher.local_manifest, repo, manifest) is None:
            # its referrers index, if any, is one of the orphaned indexes this reconcile removes
            await self.pusher.delete_manifest(repo, manifest)

    async def _orphaned_indexes(
        self, repo: str, tags: list[str], report: ReconcileReport, dry_run: bool
    ) -> None:
        """Remove the referrers tag schema indexes (``tags``) of subjects the local repository
        no longer has: a subject deleted while the jobs did not remove its index (older
        versions, a dropped job). A sha384 or sha512 tag truncates its subject's digest: it is
        kept while the local repository has a manifest of that algorithm whose digest begins
        with the tag's 64 hex digits, and is removed by name
        (:meth:`~origin.replicaindex.TargetReferrers.drop_tag`) otherwise."""
        for tag in tags:
            if await asyncio.to_thread(self._local_subject, repo, tag) is not None:
                continue
            if not dry_run and not await self.referrers.drop_tag(repo, tag):
                continue
            report.indexes_repaired.append(f"{repo}:{tag}")

    def _local_subject(self, repo: str, tag: str) -> Digest | None:
        """A manifest of local ``repo`` whose fallback tag is ``tag`` (blocking): the digest the
        tag names for sha256, else one whose digest begins with the tag's truncated hex."""
        subject = fallback_subject(tag)
        if subject is not None:
            return subject if self.pusher.local_manifest(repo, subject) is not None else None
        found = fallback_prefix(tag)
        if found is None:
            return None
        algorithm, prefix = found
        for name in child_names(self.layout.revisions_dir(repo) / algorithm):
            if not name.startswith(prefix):
                continue
            try:
                digest = Digest.parse(f"{algorithm}:{name}")
            except errors.DigestInvalid:
                continue
            if fallback_tag(digest) == tag and self.pusher.local_manifest(repo, digest) is not None:
                return digest
        return None

    async def _index_owned(self, repo: str, tag: str, probe: Digest | None) -> bool:
        """Whether ``tag`` is a referrers tag schema tag on a target without the referrers
        API: :mod:`origin.replicareferrers` keeps those indexes (merging entries), so the tag
        walk neither copies the local tag of that name over them nor deletes them."""
        if not is_fallback_tag(tag):
            return False
        return not await self.referrers.has_api(repo, probe or _PROBE)


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
