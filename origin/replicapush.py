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

Drift repair (the reconcile of a whole target) is :mod:`origin.replicareconcile`; it compares
manifests as :meth:`TargetPusher.push_manifest` does (:func:`same_content`).

Errors from the target raise :mod:`regcore.errors` exceptions (the caller retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from origin.manifests import detect_media_type
from origin.referrers import referrer_entry
from origin.replicaindex import (
    TargetReferrers,
    delete_tag,
    placeholder,
)
from origin.repository import subject_digest
from origin.snapshot import list_repositories, manifest_refs, read_link
from regcore import errors
from regcore.client import RegistryClient
from regcore.digest import Digest
from regcore.eventsconfig import ReplicationTarget
from regcore.storage.layout import Layout

__all__ = ["PushResult", "TargetPusher", "matches", "same_content"]

_CHUNK = 1 << 20
_KNOWN_LOCATIONS = 50_000
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
        # algorithms the target refused a manifest PUT by digest for (docker-registry: sha512)
        self._refused: set[str] = set()

    # -- local side -------------------------------------------------------------------------

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
    async def remote_digest(self, repo: str, ref: str) -> str | None:
        try:
            return (await self.client.head_manifest(repo, ref)).digest
        except (errors.ManifestUnknown, errors.NameUnknown):
            return None

    async def _target_has(self, repo: str, ref: str, digest: Digest, raw: bytes) -> bool:
        """Whether the target's ``ref`` (a tag, or ``str(digest)``) names the bytes ``raw`` of
        manifest ``digest`` (:func:`same_content`). A target that refused a PUT by a digest of
        this algorithm (docker-registry takes sha256 only, and answers 404 to a HEAD by a sha512
        digest) is asked by the sha256 digest of ``raw``, the one it files those bytes under."""
        remote = await self.remote_digest(repo, ref)
        if same_content(remote, digest, raw):
            return True
        if ref != str(digest) or digest.algorithm not in self._refused:
            return False
        return await self.remote_digest(repo, str(Digest.of(raw))) is not None

    async def _child_present(self, repo: str, child: Digest) -> bool:
        """Whether the target has manifest ``child`` (of an index), by content for one the
        origin keeps under another algorithm than sha256 (:meth:`_target_has`)."""
        raw = None
        if child.algorithm != "sha256":
            raw = await asyncio.to_thread(self.local_manifest, repo, child)
        if raw is not None:
            return await self._target_has(repo, str(child), child, raw)
        return await self.remote_digest(repo, str(child)) == str(child)

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
        deleted = await self.delete_manifest(repo, manifest)
        # also when the target no longer had the manifest (a retried job, or deleted there)
        await self._drop_index(repo, manifest)
        return deleted

    async def delete_manifest(self, repo: str, manifest: Digest) -> bool:
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


def same_content(remote: str | None, digest: Digest, raw: bytes) -> bool:
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
