"""The referrers of a subject as one replication target holds them (:class:`TargetReferrers`).

A target with the referrers API (a Quayside origin, any OCI 1.1 registry) indexes a manifest's
``subject`` itself: pushing the referrer is all there is to do, and
``GET /v2/<name>/referrers/<digest>`` lists what it holds. A target without it
(docker-registry 2.8 answers that route 404) gets what the OCI Distribution Spec 1.1 asks a
client to do instead, the referrers tag schema: the tag :func:`fallback_tag` of the subject
(``<alg>-<ref>``: ``sha256-<64 hex>``; the spec limits ``<ref>`` to 64 characters, so a sha512
subject's tag is ``sha512-`` and the first 64 of its 128 hex digits) points to an image index
whose ``manifests`` are the referrers' descriptors (as :func:`origin.referrers.referrer_entry`
builds them, the same as our referrers API lists).

Guarantees:

- :meth:`TargetReferrers.listed` answers from the API, else from the fallback index (a missing
  tag is an empty list; :meth:`TargetReferrers.listing` also says whether the tag exists). Whether the target has the API is learned from that answer and
  remembered for :data:`API_TTL` seconds.
- :meth:`TargetReferrers.announce` and :meth:`TargetReferrers.withdraw` are idempotent
  read-modify-write updates of the fallback index (a no-op on a target with the API). They
  keep every entry they were not asked to change (entries other clients wrote survive), and
  one lock per target serialises them in this process, so the event worker and a reconcile
  of the same origin never lose each other's entry. A ``quayside replicate`` run in another
  process can still race the worker; the next reconcile puts a lost entry back. An entry whose
  manifest the target no longer has (deleted there directly) is dropped when the index is
  rewritten, since docker-registry refuses an index naming a manifest it does not have.
- An index that would list nothing is not written: :meth:`TargetReferrers.withdraw` of the
  last entry removes the tag (:meth:`TargetReferrers.drop`, also used when the subject itself
  is deleted). The spec makes the two states equal ("If the response to the referrers API is
  a 404, and the tag schema does not return a valid image index, the client SHOULD assume
  there are no referrers") and lets a client that deletes a manifest "also delete the
  referrers tag". docker-registry refuses ``DELETE`` of a tag (``DIGEST_INVALID``) and
  deleting by digest drops every tag on that digest (equal indexes share one), so the tag is
  first pointed at an empty index only it can have (:func:`tombstone`, annotated with the
  subject) and that digest is deleted (:func:`delete_tag`, which
  :meth:`origin.replicapush.TargetPusher.delete` also uses for ordinary tags). A target that
  refuses the delete keeps the tombstone: an empty, valid index, which
  :meth:`TargetReferrers.listing` reports as no index.
- The index the tag pointed to before is not deleted, for the same reason (garbage collection
  on the target removes it once nothing points to it).
- A tag alone names its subject only for sha256 (:func:`fallback_subject`); a sha384 or sha512
  tag is truncated. :meth:`TargetReferrers.drop_tag` removes such a tag given only its name:
  the subject is read back from the index (a tombstone's annotation, else the ``subject`` of a
  listed referrer the target has), so the tombstone is the one :meth:`TargetReferrers.drop`
  writes; when nothing there names it, the tag's placeholder is annotated with the tag itself.

Errors from the target raise :mod:`regcore.errors` exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from origin.repository import subject_digest
from regcore import errors
from regcore import mediatypes as mt
from regcore.client import RegistryClient
from regcore.digest import Digest

__all__ = [
    "API_TTL",
    "Listing",
    "TargetReferrers",
    "delete_tag",
    "fallback_prefix",
    "fallback_subject",
    "fallback_tag",
    "is_fallback_tag",
    "placeholder",
    "tombstone",
]

API_TTL = 300.0
_FALLBACK_TAG = re.compile(r"(sha256|sha384|sha512)-[0-9a-f]{64}")
_TOMBSTONE_KEY = "org.quayside.referrers.dropped"
# a tag DELETE refused by a registry that deletes manifests by digest only (docker-registry
# answers DIGEST_INVALID), or one with tag deletes turned off
_TAG_DELETE_REFUSED = (
    errors.DigestInvalid,
    errors.ManifestInvalid,
    errors.TagInvalid,
    errors.Unsupported,
)


def fallback_tag(subject: Digest) -> str:
    """The referrers tag schema's tag of ``subject``: ``<alg>-<hex>``, each part truncated
    as the spec says (32 and 64 characters)."""
    return f"{subject.algorithm[:32]}-{subject.hex[:64]}"


def is_fallback_tag(tag: str) -> bool:
    """Whether ``tag`` has the referrers tag schema's form: ``sha256-``, ``sha384-`` or
    ``sha512-`` and 64 hex digits (the whole sha256 digest, the others truncated)."""
    return _FALLBACK_TAG.fullmatch(tag) is not None


def fallback_subject(tag: str) -> Digest | None:
    """The subject whose fallback tag is ``tag`` when the tag names it whole (``sha256-<hex>``),
    else None: sha384 and sha512 digests are truncated in their tags (64 of 96 or 128 hex
    digits), so such a tag names a prefix only (:func:`fallback_prefix`)."""
    if not is_fallback_tag(tag) or not tag.startswith("sha256-"):
        return None
    return Digest.parse("sha256:" + tag[len("sha256-") :])


def fallback_prefix(tag: str) -> tuple[str, str] | None:
    """(algorithm, leading hex digits) that the subject of fallback tag ``tag`` has: the whole
    digest for sha256, the first 64 hex digits for sha384 and sha512; None for another tag."""
    if not is_fallback_tag(tag):
        return None
    algorithm, _, prefix = tag.partition("-")
    return algorithm, prefix


def placeholder(annotations: dict[str, str]) -> bytes:
    """An empty OCI image index carrying ``annotations``: what :func:`delete_tag` points a tag
    at before deleting it by digest. The annotations must make its digest one no other tag has."""
    body = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [],
        "annotations": annotations,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def tombstone(subject: Digest) -> bytes:
    """The empty index the fallback tag of ``subject`` is pointed at before it is deleted: its
    annotation makes its digest one no other tag has (see the module docstring)."""
    return placeholder({_TOMBSTONE_KEY: str(subject)})


async def delete_tag(
    client: RegistryClient, repo: str, tag: str, grave: bytes, *, restore: bool = False
) -> bool:
    """Remove ``tag`` from the target's ``repo`` and nothing else; True when the target changed,
    False when there was no tag.

    ``DELETE`` of the tag is tried first (a registry that deletes tags). One that refuses it
    (docker-registry deletes by digest only, and that drops every tag on the digest) gets
    ``grave`` (a :func:`placeholder` no other tag can point to) under the tag, then ``DELETE``
    of that digest: only this tag goes, the manifest it named and its other tags (also ones
    only the target has) stay, and a puller sees the tag on the old manifest, on the empty
    placeholder, or gone. A tag already on ``grave`` (a retried removal) skips to the delete.

    A placeholder gone meanwhile took the tag with it (True when this call put it there).
    When the target refuses the delete by digest too (deletes turned off): without ``restore``
    the tag keeps the placeholder (True when that changed the target); with ``restore`` the
    refusal is raised: with ``restore``, a ``DELETE`` of the placeholder's digest before it is
    written finds that out (registry:2 with deletes off answers any DELETE 405, an unknown
    digest 404 otherwise), and the target is left untouched; a refusal only after the write
    points the tag back at the manifest it named (as far as the target allows; else the tag
    stays on the placeholder)."""
    try:
        current = (await client.head_manifest(repo, tag)).digest
    except (errors.ManifestUnknown, errors.NameUnknown):
        return False
    original: str | None = None
    if current != str(Digest.of(grave)):
        try:
            await client.delete_manifest(repo, tag)  # a registry that deletes tags
            return True
        except (errors.ManifestUnknown, errors.NameUnknown):
            return False
        except _TAG_DELETE_REFUSED:
            pass
        if restore:  # a target with deletes off refuses any DELETE: find out before writing
            with contextlib.suppress(errors.ManifestUnknown, errors.NameUnknown):
                await client.delete_manifest(repo, str(Digest.of(grave)))  # 404: not there yet
        original = current
        current = await client.push_manifest(repo, tag, grave, mt.OCI_INDEX)
    try:
        await client.delete_manifest(repo, current)
    except (errors.ManifestUnknown, errors.NameUnknown):
        return original is not None  # gone meanwhile
    except errors.Unsupported:
        if not restore:
            return original is not None  # deletes turned off: the tag keeps the placeholder
        if original is not None:
            with contextlib.suppress(errors.RegistryError):  # else the placeholder stays
                fetched = await client.get_manifest(repo, original)
                await client.push_manifest(repo, tag, fetched.body, fetched.media_type)
        raise
    return True


@dataclass
class Listing:
    """What a target lists as referrers of one subject: ``api`` whether it has the referrers
    API; ``entries`` digest -> descriptor; ``tagged`` whether the fallback tag exists and is
    not a :func:`tombstone` (always False with the API)."""

    api: bool
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    tagged: bool = False


class TargetReferrers:
    """See the module docstring; ``clock`` is monotonic seconds (tests pass their own)."""

    def __init__(
        self, client: RegistryClient, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = client
        self.clock = clock
        self._api: tuple[bool, float] | None = None
        self._lock = asyncio.Lock()

    def _known(self) -> bool | None:
        if self._api is not None and self.clock() - self._api[1] < API_TTL:
            return self._api[0]
        return None

    async def has_api(self, repo: str, subject: Digest) -> bool:
        """Whether the target answers the referrers API (remembered, else asked for
        ``subject``)."""
        known = self._known()
        if known is not None:
            return known
        return (await self.listing(repo, subject)).api

    async def listed(self, repo: str, subject: Digest) -> tuple[bool, dict[str, dict[str, Any]]]:
        """(target has the API, digest -> descriptor of each referrer of ``subject`` it lists)."""
        found = await self.listing(repo, subject)
        return found.api, found.entries

    async def listing(self, repo: str, subject: Digest) -> Listing:
        """The target's referrers of ``subject`` (see :class:`Listing`)."""
        if self._known() is not False:
            found = await self.client.list_referrers(repo, str(subject))
            self._api = (found is not None, self.clock())
            if found is not None:
                return Listing(True, {d["digest"]: d for d in found})
        entries = await self._fallback(repo, subject)
        if entries is None:
            return Listing(False)
        return Listing(False, {d["digest"]: d for d in entries}, tagged=True)

    async def _fallback(self, repo: str, subject: Digest) -> list[dict[str, Any]] | None:
        """The entries of the fallback index; None when there is no tag (or a tombstone)."""
        try:
            fetched = await self.client.get_manifest(repo, fallback_tag(subject))
        except (errors.ManifestUnknown, errors.NameUnknown):
            return None
        if fetched.body == tombstone(subject):
            return None
        try:
            doc = json.loads(fetched.body)
        except ValueError:
            return []
        found = doc.get("manifests") if isinstance(doc, dict) else None
        return [d for d in found or () if isinstance(d, dict) and isinstance(d.get("digest"), str)]

    async def _write(self, repo: str, subject: Digest, entries: list[dict[str, Any]]) -> None:
        """PUT the index; docker-registry refuses one naming a manifest it does not have
        (MANIFEST_BLOB_UNKNOWN), so when an entry's manifest was deleted on the target, the
        entries it lacks are dropped and the index is written again (once), or removed when
        none is left."""
        try:
            await self._put(repo, subject, entries)
        except errors.ManifestBlobUnknown:
            kept = [d for d in entries if await self._exists(repo, d["digest"])]
            if len(kept) == len(entries):
                raise
            if kept:
                await self._put(repo, subject, kept)
            else:
                await self._drop(repo, subject)

    async def _put(self, repo: str, subject: Digest, entries: list[dict[str, Any]]) -> None:
        body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        raw = json.dumps(body, separators=(",", ":")).encode()
        await self.client.push_manifest(repo, fallback_tag(subject), raw, mt.OCI_INDEX)

    async def missing(self, repo: str, digests: list[str]) -> set[str]:
        """Those of ``digests`` that name no manifest on the target (one HEAD each)."""
        return {d for d in digests if not await self._exists(repo, d)}

    async def _exists(self, repo: str, digest: str) -> bool:
        try:
            await self.client.head_manifest(repo, digest)
        except (errors.ManifestUnknown, errors.NameUnknown):
            return False
        return True

    async def announce(self, repo: str, subject: Digest, entry: dict[str, Any]) -> bool:
        """Make the fallback index of ``subject`` list ``entry`` (a referrer descriptor); True
        when the index was rewritten, False when it already did or the target has the API."""
        if await self.has_api(repo, subject):
            return False
        async with self._lock:
            entries = await self._fallback(repo, subject) or []
            if any(d["digest"] == entry["digest"] for d in entries):
                return False
            await self._write(repo, subject, [*entries, entry])
        return True

    async def withdraw(self, repo: str, subject: Digest, digests: set[str]) -> bool:
        """Drop ``digests`` from the fallback index of ``subject``; True when it was rewritten,
        or removed when that left it empty (:meth:`drop`). False on a target with the API."""
        if await self.has_api(repo, subject):
            return False
        async with self._lock:
            entries = await self._fallback(repo, subject) or []
            kept = [d for d in entries if d["digest"] not in digests]
            if len(kept) == len(entries):
                return False
            if kept:
                await self._write(repo, subject, kept)
            else:
                await self._drop(repo, subject)
        return True

    async def drop(self, repo: str, subject: Digest) -> bool:
        """Remove the fallback tag of ``subject`` (see the module docstring); True when the
        target changed (the tag removed, or left on a tombstone when the target refuses
        deletes). False when there was no tag, or on a target with the API."""
        if await self.has_api(repo, subject):
            return False
        async with self._lock:
            return await self._drop(repo, subject)

    async def _drop(self, repo: str, subject: Digest) -> bool:
        return await delete_tag(self.client, repo, fallback_tag(subject), tombstone(subject))

    async def drop_tag(self, repo: str, tag: str) -> bool:
        """Remove the fallback tag ``tag`` knowing only its name (a sha384 or sha512 tag
        truncates its subject; see the module docstring). True/False as :meth:`drop`; False
        too when ``tag`` is not a fallback tag."""
        if not is_fallback_tag(tag):
            return False
        subject = fallback_subject(tag) or await self._subject_of(repo, tag)
        if subject is not None:
            return await self.drop(repo, subject)
        if await self.has_api(repo, Digest.of(b"")):
            return False
        async with self._lock:
            return await delete_tag(self.client, repo, tag, placeholder({_TOMBSTONE_KEY: tag}))

    async def _subject_of(self, repo: str, tag: str) -> Digest | None:
        """The subject whose fallback tag is ``tag``, as the index there names it: the
        annotation of a tombstone, else the ``subject`` of the first listed referrer the target
        has whose subject has this tag; None when nothing there names one."""
        try:
            doc = json.loads((await self.client.get_manifest(repo, tag)).body)
        except (errors.ManifestUnknown, errors.NameUnknown, ValueError):
            return None
        if not isinstance(doc, dict):
            return None
        annotations = doc.get("annotations")
        named = annotations.get(_TOMBSTONE_KEY) if isinstance(annotations, dict) else None
        if isinstance(named, str):
            with contextlib.suppress(errors.DigestInvalid):
                if fallback_tag(subject := Digest.parse(named)) == tag:
                    return subject
        entries = doc.get("manifests")
        for entry in entries if isinstance(entries, list) else ():
            if not (isinstance(entry, dict) and isinstance(entry.get("digest"), str)):
                continue
            try:
                raw = (await self.client.get_manifest(repo, entry["digest"])).body
            except (errors.ManifestUnknown, errors.NameUnknown, errors.DigestInvalid):
                continue
            found = subject_digest(raw)
            if found is not None and fallback_tag(found) == tag:
                return found
        return None
