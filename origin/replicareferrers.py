"""Reconcile of referrers: signatures, SBOMs and attestations of tagged images (``subject``).

Such manifests are pushed by digest, so the tag walk of :meth:`origin.replicareconcile.
TargetReconciler.reconcile` never sees them; :class:`ReferrerSync` does, for one repository at a time:

- The roots are the repository's tagged manifests and the children of a tagged index that the
  repository holds. For each root, the local referrers (the origin's referrers index,
  :meth:`origin.repository.Repositories.list_referrers`, read-only) are compared with what the
  target lists (:meth:`origin.replicaindex.TargetReferrers.listed`: its referrers API, else the
  referrers tag schema's index ``sha256-<hex>``, ``sha512-<first 64 hex>``). A referrer the target does not list is pushed
  with :meth:`~origin.replicapush.TargetPusher.push_manifest` (children, blobs first, mounted
  when possible; on a target without the API it then joins the subject's fallback index, as
  the event-driven jobs do), and named in ``ReconcileReport.referrers_pushed``; ``dry_run``
  only names it.
- Referrers of referrers (a signature on an SBOM) are followed breadth first, down to
  :data:`MAX_DEPTH` levels below a root. A manifest cannot refer to itself or to a descendant
  (its digest would have to be in its own bytes), so there are no cycles; a set of visited
  digests guards the walk anyway.
- With the target's ``replicate_deletes``, a referrer the target lists for a root (or a
  referrer followed) that the local repository does not have is removed
  (``referrers_deleted``). On a target with the referrers API (a Quayside origin) the manifest
  is deleted by digest; deletes refused there are failures, since it would stay listed. On a
  target without it the fallback index is rewritten without the entry first, then the manifest
  is deleted if the target allows (a refused delete leaves an unlisted manifest, which is
  not a failure). Without ``replicate_deletes`` extra referrers on the target are left alone.
- On a target without the API each fallback index the walk reads is also checked against
  the target itself (one ``HEAD`` per entry), with or without ``replicate_deletes``: an
  entry whose manifest the target lacks names nothing, so it is pushed again when the origin
  has it, else taken out of the index (the tag goes when that empties it); an index that
  lists nothing, where the origin has no referrers of the subject, is removed (an emptied
  index older versions left). Each index repaired is
  named in ``indexes_repaired`` (``repo:sha256-<hex>``, ``repo:sha512-<first 64 hex>``). Indexes of subjects the origin no
  longer has are not reached by this walk: :meth:`~origin.replicareconcile.TargetReconciler.reconcile`
  removes them with ``replicate_deletes``.
- The repository filters are the caller's: referrers live in the repository of their subject,
  so a repository the target does not take is never walked.

Each failure (listing a subject, pushing or deleting one referrer) is recorded in
``report.failed`` and the walk goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

from origin.replicaindex import fallback_tag
from origin.repository import Repositories
from origin.snapshot import RepoState, manifest_refs
from regcore import errors
from regcore.digest import Digest
from regcore.storage.blobstore import FilesystemBlobStore

if TYPE_CHECKING:
    from origin.replicapush import TargetPusher
    from origin.replicareconcile import ReconcileReport

__all__ = ["MAX_DEPTH", "ReferrerSync"]

MAX_DEPTH = 4


class ReferrerSync:
    """The referrers part of one target's reconcile (see the module docstring)."""

    def __init__(self, pusher: TargetPusher) -> None:
        self.pusher = pusher
        self.local = Repositories(pusher.layout, FilesystemBlobStore(pusher.layout))

    def _roots(self, repo: str, state: RepoState) -> list[Digest]:
        """Tagged manifests, then the children of tagged indexes held locally (blocking)."""
        roots = sorted(set(state.tags.values()), key=str)
        out = list(roots)
        for digest in roots:
            raw = self.pusher.local_manifest(repo, digest)
            if raw is None:
                continue
            for child in manifest_refs(raw)[1]:
                if child not in out and self.pusher.local_manifest(repo, child) is not None:
                    out.append(child)
        return out

    async def reconcile(
        self, repo: str, state: RepoState, report: ReconcileReport, dry_run: bool
    ) -> None:
        """Find (and unless ``dry_run`` repair) referrer drift of ``repo``; see the module."""
        deletes = self.pusher.target.replicate_deletes
        roots = await asyncio.to_thread(self._roots, repo, state)
        seen = set(roots)
        todo = deque((root, 0) for root in roots)
        while todo:
            subject, depth = todo.popleft()
            try:
                local = await self.local.list_referrers(repo, subject, persist=False)
                if not local and not deletes:
                    continue
                listing = await self.pusher.referrers.listing(repo, subject)
                api, remote = listing.api, listing.entries
                dangling: set[str] = set()
                if not api and remote:
                    dangling = await self.pusher.referrers.missing(repo, sorted(remote))
                    remote = {d: e for d, e in remote.items() if d not in dangling}
            except errors.RegistryError as exc:
                report.failed.append({"ref": f"{repo}@{subject}", "error": _brief(exc)})
                continue
            for ref in local:
                report.referrers_checked += 1
                if ref not in seen and depth + 1 < MAX_DEPTH:
                    seen.add(ref)
                    todo.append((ref, depth + 1))
                if str(ref) in remote:
                    continue
                try:
                    if not dry_run and (await self.pusher.push_manifest(repo, ref)).gone:
                        continue
                except errors.RegistryError as exc:
                    report.failed.append({"ref": f"{repo}@{ref}", "error": _brief(exc)})
                    continue
                report.referrers_pushed.append(f"{repo}@{ref}")
            if deletes:
                extra = sorted(set(remote) - {str(d) for d in local})
                await self._remove(repo, subject, api, extra, report, dry_run)
            if not api:
                stale = dangling - {str(d) for d in local}
                empty = listing.tagged and not listing.entries and not local
                if stale or empty:
                    await self._repair_index(repo, subject, stale, report, dry_run)

    async def _repair_index(
        self,
        repo: str,
        subject: Digest,
        stale: set[str],
        report: ReconcileReport,
        dry_run: bool,
    ) -> None:
        """Take out of the fallback index of ``subject`` the entries naming manifests neither
        the target nor the origin has (``stale``), or remove an index that lists nothing."""
        referrers = self.pusher.referrers
        try:
            if not dry_run:
                if stale:
                    await referrers.withdraw(repo, subject, stale)
                else:
                    await referrers.drop(repo, subject)
            report.indexes_repaired.append(f"{repo}:{fallback_tag(subject)}")
        except errors.RegistryError as exc:
            report.failed.append({"ref": f"{repo}:{fallback_tag(subject)}", "error": _brief(exc)})

    async def _remove(
        self,
        repo: str,
        subject: Digest,
        api: bool,
        extra: list[str],
        report: ReconcileReport,
        dry_run: bool,
    ) -> None:
        client = self.pusher.client
        for digest in extra:
            try:
                if not dry_run:
                    if not api:
                        await self.pusher.referrers.withdraw(repo, subject, {digest})
                    refused: tuple[type[errors.RegistryError], ...] = (
                        errors.ManifestUnknown,
                        errors.NameUnknown,
                    )
                    if not api:
                        refused += (errors.Unsupported,)
                    with contextlib.suppress(*refused):
                        await client.delete_manifest(repo, digest)
                report.referrers_deleted.append(f"{repo}@{digest}")
            except errors.RegistryError as exc:
                report.failed.append({"ref": f"{repo}@{digest}", "error": _brief(exc)})


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
