"""Copy manifests (and everything they need) from a local storage root to one target registry.

:class:`TargetPusher` speaks to the target through :class:`regcore.client.RegistryClient`
(token or basic auth, uploads, mounts) and reads the local root from disk. Guarantees:

- :meth:`TargetPusher.push_manifest` sends children of an index first, then every blob the
  manifest needs, then the manifest (under its tag, or by digest), byte for byte: the target
  ends with the same digest. Anything the target already has is skipped (``HEAD`` first), so
  replicating an unchanged image costs one ``HEAD`` per manifest. "Same" is by content: a
  target that reports another digest algorithm for a tag than the origin's (docker-registry
  files a manifest the origin keeps under its sha512 digest under the sha256 digest of the
  same bytes) has it when that digest is the one of the local bytes under its algorithm.
- A manifest pushed by a sha512 (or other non-sha256) digest that the target refuses by that
  digest (docker-registry: ``DIGEST_INVALID``) is pushed by the sha256 digest of the same bytes
  instead (remembered per target, so later checks ``HEAD`` that digest), not dropped; its tags
  are pushed by tag (reconcile, or a job by tag).
- A missing blob is mounted from another repository of the target when one is known to hold it
  (learned from earlier pushes and ``HEAD`` answers, or another local repository matching the
  target's globs), else uploaded, streamed from the local file (one ``PATCH``).
- A manifest that is no longer in the local repository is skipped (``"gone"``): a later
  delete event or reconcile settles it.
- A manifest with a ``subject`` (a signature, SBOM, attestation: a referrer) needs nothing
  more on a target with the referrers API. On a target without it (docker-registry 2.8) it is
  then listed in its subject's referrers tag schema index (``sha256-<hex>``; ``sha512-`` and
  the first 64 hex digits for a sha512 subject,
  :class:`~origin.replicaindex.TargetReferrers`), also when the target already had the
  manifest; a manifest deleted by digest there is first dropped from that index (the index
  goes when that leaves it empty), and its own index (``sha256-<hex of the manifest>``, listing
  its referrers) goes with it, as the spec allows ("clients MAY also delete the referrers
  tag").
- :meth:`TargetPusher.delete` of a tag removes that tag and nothing else: a target that
  deletes tags gets ``DELETE`` of the tag; one that refuses it (docker-registry deletes by
  digest only, which would drop every tag on the digest) first gets the tag pointed at an
  empty index unique to this removal (annotated with ``repo:tag`` and a nonce), then ``DELETE``
  of that digest (:func:`origin.replicaindex.delete_tag`). The manifest and its other tags,
  also ones only the target has, are never touched, so their pulls never fail meanwhile, and
  a failure half way leaves at most the deleted tag on the placeholder (a retry finishes it).
  A target that refuses deletes by digest too gets the tag pointed back at its manifest and
  the refusal is raised.
- :meth:`TargetPusher.reconcile` compares every tag of the local repositories matching the
  target's globs with the target (``HEAD``, by content as above, so a sha512 manifest stored
  under sha256 there is not pushed again on every run) and pushes what differs; with ``replicate_deletes``
  it also removes tags the target has and the local repository does not (each as
  :meth:`TargetPusher.delete` removes a tag, so a manifest the origin still has, say the
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

Errors from the target raise :mod:`regcore.errors` exceptions (the caller retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from origin.manifests import detect_media_type
from origin.referrers import referrer_entry
from origin.replicaindex import (
    TargetReferrers,
    delete_tag,
    fallback_prefix,
    fallback_subject,
    fallback_tag,
    is_fallback_tag,
    placeholder,
)
from origin.replicareferrers import ReferrerSync
from origin.repository import child_names, subject_digest
from origin.snapshot import (
    NoProgress,
    Progress,
    list_repositories,
    manifest_refs,
    read_link,
    read_repository,
)
from regcore import errors
from regcore.client import RegistryClient
from regcore.digest import Digest
from regcore.eventsconfig import ReplicationTarget
from regcore.storage.layout import Layout

__all__ = ["PushResult", "ReconcileReport", "TargetPusher", "matches"]

_CHUNK = 1 << 20
_KNOWN_LOCATIONS = 50_000
_PROBE = Digest.of(b"")  # any digest tells whether the target answers the referrers API
_DELETED_TAG_KEY = "org.quayside.replication.deleted-tag"
_NONCE_KEY = "org.quayside.replication.nonce"


def matches(target: ReplicationTarget, repository: str) -> bool:
    """Whether ``repository`` is replicated to ``target`` (any of its globs)."""
    return any(fnmatchcase(repository, g) for g in target.repositories)


@dataclass
class PushResult:
    manifests: int = 0
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes: int = 0
    gone: bool = False


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


class TargetPusher:
    """One target; ``on_blob(how, nbytes)`` is told about each blob (uploaded/mounted/present)."""

    def __init__(
        self,
        target: ReplicationTarget,
        layout: Layout,
        client: RegistryClient,
        *,
        on_blob: Callable[[str, int], None] | None = None,
    ) -> None:
        self.target = target
        self.layout = layout
        self.client = client
        self.on_blob = on_blob
        self._locations: OrderedDict[Digest, str] = OrderedDict()
        self._repos: list[str] = []
        self._repos_at = -1e9
        self.referrers = TargetReferrers(client)
        self._referrer_sync = ReferrerSync(self)
        # algorithms the target refused a manifest PUT by digest for (docker-registry: sha512)
        self._refused: set[str] = set()

    # -- local side -------------------------------------------------------------------------
    def _bytes(self, repo: str, digest: Digest) -> bytes:
        """:meth:`local_manifest`, or no bytes when the repository lacks it (blocking)."""
        return self.local_manifest(repo, digest) or b""

    def local_manifest(self, repo: str, digest: Digest) -> bytes | None:
        """The bytes of manifest ``digest`` if it is a revision of local ``repo`` (blocking)."""
        if read_link(self.layout.revision_link(repo, digest)) != digest:
            return None
        try:
            return self.layout.blob_data(digest).read_bytes()
        except OSError:
            return None

    async def _chunks(self, digest: Digest) -> AsyncIterator[bytes]:
        fh = await asyncio.to_thread(open, self.layout.blob_data(digest), "rb")
        try:
            while chunk := await asyncio.to_thread(fh.read, _CHUNK):
                yield chunk
        finally:
            fh.close()

    def _remember(self, digest: Digest, repo: str) -> None:
        self._locations[digest] = repo
        self._locations.move_to_end(digest)
        while len(self._locations) > _KNOWN_LOCATIONS:
            self._locations.popitem(last=False)

    def _mount_sources(self, repo: str, digest: Digest) -> list[str]:
        """Where the target may hold the blob: the last place we saw it there, else up to two
        other local repositories this target takes that link it (blocking)."""
        known = self._locations.get(digest)
        if known and known != repo:
            return [known]
        now = time.monotonic()
        if now - self._repos_at > 60.0:
            self._repos = [r for r in list_repositories(self.layout) if matches(self.target, r)]
            self._repos_at = now
        out = []
        for other in self._repos:
            if other != repo and read_link(self.layout.layer_link(other, digest)) == digest:
                out.append(other)
                if len(out) == 2:
                    break
        return out

    # -- pushing ----------------------------------------------------------------------------
    async def _remote_digest(self, repo: str, ref: str) -> str | None:
        try:
            return (await self.client.head_manifest(repo, ref)).digest
        except (errors.ManifestUnknown, errors.NameUnknown):
            return None

    async def _target_has(self, repo: str, ref: str, digest: Digest, raw: bytes) -> bool:
        """Whether the target's ``ref`` (a tag, or ``str(digest)``) names the bytes ``raw`` of
        manifest ``digest`` (:func:`_same_content`). A target that refused a PUT by a digest of
        this algorithm (docker-registry takes sha256 only, and answers 404 to a HEAD by a sha512
        digest) is asked by the sha256 digest of ``raw``, the one it files those bytes under."""
        remote = await self._remote_digest(repo, ref)
        if _same_content(remote, digest, raw):
            return True
        if ref != str(digest) or digest.algorithm not in self._refused:
            return False
        return await self._remote_digest(repo, str(Digest.of(raw))) is not None

    async def _child_present(self, repo: str, child: Digest) -> bool:
        """Whether the target has manifest ``child`` (of an index), by content for one the
        origin keeps under another algorithm than sha256 (:meth:`_target_has`)."""
        raw = None
        if child.algorithm != "sha256":
            raw = await asyncio.to_thread(self.local_manifest, repo, child)
        if raw is not None:
            return await self._target_has(repo, str(child), child, raw)
        return await self._remote_digest(repo, str(child)) == str(child)

    async def ensure_blob(self, repo: str, digest: Digest, result: PushResult) -> None:
        """The target's ``repo`` has the blob (HEAD, else mount, else streamed upload)."""
        try:
            await self.client.head_blob(repo, str(digest))
            result.blobs_present += 1
            self._remember(digest, repo)
            if self.on_blob:
                self.on_blob("present", 0)
            return
        except (errors.BlobUnknown, errors.NameUnknown):
            pass
        for source in await asyncio.to_thread(self._mount_sources, repo, digest):
            if await self.client.mount_blob(repo, str(digest), source):
                result.blobs_mounted += 1
                self._remember(digest, repo)
                if self.on_blob:
                    self.on_blob("mounted", 0)
                return
        size = (await asyncio.to_thread(self.layout.blob_data(digest).stat)).st_size
        await self.client.push_blob(repo, self._chunks(digest), str(digest))
        result.blobs_uploaded += 1
        result.bytes += size
        self._remember(digest, repo)
        if self.on_blob:
            self.on_blob("uploaded", size)

    async def push_manifest(
        self, repo: str, digest: Digest, tag: str | None = None, result: PushResult | None = None
    ) -> PushResult:
        """Replicate manifest ``digest`` of local ``repo`` (see the module docstring)."""
        result = result or PushResult()
        raw = await asyncio.to_thread(self.local_manifest, repo, digest)
        if raw is None:
            result.gone = True
            return result
        ref = tag or str(digest)
        if not await self._target_has(repo, ref, digest, raw):
            blobs, children = manifest_refs(raw)
            for child in children:
                if not await self._child_present(repo, child):
                    await self.push_manifest(repo, child, None, result)
            for blob in blobs:
                await self.ensure_blob(repo, blob, result)
            media_type = detect_media_type(raw)
            try:
                await self.client.push_manifest(repo, ref, raw, media_type)
            except errors.DigestInvalid:
                if tag is not None or digest.algorithm == "sha256":
                    raise
                # a target that takes manifests by sha256 digest only (docker-registry): the
                # same bytes under their sha256 digest (a PUT by tag is filed there too)
                self._refused.add(digest.algorithm)
                await self.client.push_manifest(repo, str(Digest.of(raw)), raw, media_type)
            result.manifests += 1
        subject = subject_digest(raw)
        entry = referrer_entry(raw, digest) if subject is not None else None
        if subject is not None and entry is not None:
            await self.referrers.announce(repo, subject, entry)
        return result

    async def delete(self, repo: str, digest: str | None, tag: str | None) -> bool:
        """Delete a tag or a manifest on the target; False when it was not there."""
        ref = tag or digest
        if not ref:
            return False
        if tag is not None:
            # registry:2 refuses DELETE by tag, and deleting by digest would drop every tag on
            # that digest: the tag goes by way of a placeholder only it names (see the module)
            try:
                return await delete_tag(
                    self.client, repo, tag, _tag_placeholder(repo, tag), restore=True
                )
            except (errors.ManifestUnknown, errors.NameUnknown):
                return False
        manifest = Digest.parse(ref)
        deleted = await self._delete_manifest(repo, manifest)
        # also when the target no longer had the manifest (a retried job, or deleted there)
        await self._drop_index(repo, manifest)
        return deleted

    async def _delete_manifest(self, repo: str, manifest: Digest) -> bool:
        """Delete ``manifest`` by digest (every tag on it goes too), after taking it out of its
        subject's fallback index; False when the target did not have it."""
        try:
            await self._unlist(repo, manifest)
            await self.client.delete_manifest(repo, str(manifest))
        except (errors.ManifestUnknown, errors.NameUnknown):
            return False
        return True

    async def _drop_index(self, repo: str, subject: Digest) -> None:
        """After manifest ``subject`` was deleted: on a target without the referrers API,
        remove its referrers tag schema index, unless the local repository has the manifest
        again (pushed back since the delete; its referrers stay listed)."""
        if await asyncio.to_thread(self.local_manifest, repo, subject) is not None:
            return
        with contextlib.suppress(errors.ManifestUnknown, errors.NameUnknown):
            await self.referrers.drop(repo, subject)

    async def _unlist(self, repo: str, digest: Digest) -> None:
        """Before the target deletes manifest ``digest``: on a target without the referrers
        API, drop it from its subject's fallback index (else that index would list a manifest
        the target no longer has, and docker-registry refuses an index naming one)."""
        if await self.referrers.has_api(repo, digest):
            return
        raw = (await self.client.get_manifest(repo, str(digest))).body
        subject = subject_digest(raw)
        if subject is not None:
            await self.referrers.withdraw(repo, subject, {str(digest)})

    # -- reconcile --------------------------------------------------------------------------
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
                    remote = await self._remote_digest(repo, tag)
                    if remote == str(digest) or (
                        remote is not None
                        and not remote.startswith(f"{digest.algorithm}:")
                        and _same_content(
                            remote, digest, await asyncio.to_thread(self._bytes, repo, digest)
                        )
                    ):
                        continue
                    if not dry_run:
                        await self.push_manifest(repo, digest, tag)
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
        tag, :meth:`delete`); then the manifest it named too when the local repository no
        longer has that manifest (deleted on the origin while no job carried the delete). Any
        other tag still on that manifest is one the local repository lacks as well, an extra
        tag of this same walk."""
        current = await self._remote_digest(repo, tag)
        await self.delete(repo, None, tag)
        if current is None:
            return
        manifest = Digest.parse(current)
        if await asyncio.to_thread(self.local_manifest, repo, manifest) is None:
            # its referrers index, if any, is one of the orphaned indexes this reconcile removes
            await self._delete_manifest(repo, manifest)

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
            return subject if self.local_manifest(repo, subject) is not None else None
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
            if fallback_tag(digest) == tag and self.local_manifest(repo, digest) is not None:
                return digest
        return None

    async def _index_owned(self, repo: str, tag: str, probe: Digest | None) -> bool:
        """Whether ``tag`` is a referrers tag schema tag on a target without the referrers
        API: :mod:`origin.replicareferrers` keeps those indexes (merging entries), so the tag
        walk neither copies the local tag of that name over them nor deletes them."""
        if not is_fallback_tag(tag):
            return False
        return not await self.referrers.has_api(repo, probe or _PROBE)


def _same_content(remote: str | None, digest: Digest, raw: bytes) -> bool:
    """Whether the target's digest ``remote`` names the bytes ``raw`` of local manifest
    ``digest``: the same digest, or, when the target reports another algorithm (docker-registry
    files a manifest the origin keeps under its sha512 digest under the sha256 digest of the
    same bytes), the digest of ``raw`` under that algorithm. Empty ``raw`` never matches."""
    if remote is None:
        return False
    if remote == str(digest):
        return True
    try:
        theirs = Digest.parse(remote)
    except errors.DigestInvalid:
        return False
    if not raw or theirs.algorithm == digest.algorithm:
        return False
    return Digest.of(raw, theirs.algorithm) == theirs


def _tag_placeholder(repo: str, tag: str) -> bytes:
    """The empty index ``repo:tag`` is pointed at before it is deleted by digest on a target
    that refuses tag deletes: named after the tag, with a fresh nonce, so no other tag (nor
    another removal of this one) shares its digest."""
    return placeholder({_DELETED_TAG_KEY: f"{repo}:{tag}", _NONCE_KEY: uuid.uuid4().hex})


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
