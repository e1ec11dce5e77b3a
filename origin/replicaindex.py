"""The referrers of a subject as one replication target holds them (:class:`TargetReferrers`).

A target with the referrers API (a Quayside origin, any OCI 1.1 registry) indexes a manifest's
``subject`` itself: pushing the referrer is all there is to do, and
``GET /v2/<name>/referrers/<digest>`` lists what it holds. A target without it
(docker-registry 2.8 answers that route 404) gets what the OCI Distribution Spec 1.1 asks a
client to do instead, the referrers tag schema: the tag :func:`fallback_tag` of the subject
(``sha256-<hex>``) points to an image index whose ``manifests`` are the referrers' descriptors
(as :func:`origin.referrers.referrer_entry` builds them, the same as our referrers API lists).

Guarantees:

- :meth:`TargetReferrers.listed` answers from the API, else from the fallback index (a missing
  tag is an empty list). Whether the target has the API is learned from that answer and
  remembered for :data:`API_TTL` seconds.
- :meth:`TargetReferrers.announce` and :meth:`TargetReferrers.withdraw` are idempotent
  read-modify-write updates of the fallback index (a no-op on a target with the API). They
  keep every entry they were not asked to change (entries other clients wrote survive), and
  one lock per target serialises them in this process, so the event worker and a reconcile
  of the same origin never lose each other's entry. A ``quayside replicate`` run in another
  process can still race the worker; the next reconcile puts a lost entry back. An entry whose
  manifest the target no longer has (deleted there directly) is dropped when the index is
  rewritten, since docker-registry refuses an index naming a manifest it does not have.
- The index the tag pointed to before is not deleted: docker-registry deletes manifests by
  digest only, which drops every tag on that digest, and equal indexes (two empty ones, two
  subjects with the same referrers) share a digest.

Errors from the target raise :mod:`regcore.errors` exceptions.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

from regcore import errors
from regcore import mediatypes as mt
from regcore.client import RegistryClient
from regcore.digest import Digest

__all__ = ["API_TTL", "TargetReferrers", "fallback_tag", "is_fallback_tag"]

API_TTL = 300.0
_FALLBACK_TAG = re.compile(r"(sha256|sha384|sha512)-[0-9a-f]{64}")


def fallback_tag(subject: Digest) -> str:
    """The referrers tag schema's tag of ``subject``: ``<alg>-<hex>``, each part truncated
    as the spec says (32 and 64 characters)."""
    return f"{subject.algorithm[:32]}-{subject.hex[:64]}"


def is_fallback_tag(tag: str) -> bool:
    """Whether ``tag`` has the referrers tag schema's form (``sha256-<64 hex>``)."""
    return _FALLBACK_TAG.fullmatch(tag) is not None


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
        api, _ = await self.listed(repo, subject)
        return api

    async def listed(self, repo: str, subject: Digest) -> tuple[bool, dict[str, dict[str, Any]]]:
        """(target has the API, digest -> descriptor of each referrer of ``subject`` it lists)."""
        if self._known() is not False:
            found = await self.client.list_referrers(repo, str(subject))
            self._api = (found is not None, self.clock())
            if found is not None:
                return True, {d["digest"]: d for d in found}
        return False, {d["digest"]: d for d in await self._fallback(repo, subject)}

    async def _fallback(self, repo: str, subject: Digest) -> list[dict[str, Any]]:
        try:
            fetched = await self.client.get_manifest(repo, fallback_tag(subject))
        except (errors.ManifestUnknown, errors.NameUnknown):
            return []
        try:
            doc = json.loads(fetched.body)
        except ValueError:
            return []
        found = doc.get("manifests") if isinstance(doc, dict) else None
        return [d for d in found or () if isinstance(d, dict) and isinstance(d.get("digest"), str)]

    async def _write(self, repo: str, subject: Digest, entries: list[dict[str, Any]]) -> None:
        """PUT the index; docker-registry refuses one naming a manifest it does not have
        (MANIFEST_BLOB_UNKNOWN), so when an entry's manifest was deleted on the target, the
        entries it lacks are dropped and the index is written again (once)."""
        try:
            await self._put(repo, subject, entries)
        except errors.ManifestBlobUnknown:
            kept = [d for d in entries if await self._exists(repo, d["digest"])]
            if len(kept) == len(entries):
                raise
            await self._put(repo, subject, kept)

    async def _put(self, repo: str, subject: Digest, entries: list[dict[str, Any]]) -> None:
        body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        raw = json.dumps(body, separators=(",", ":")).encode()
        await self.client.push_manifest(repo, fallback_tag(subject), raw, mt.OCI_INDEX)

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
            entries = await self._fallback(repo, subject)
            if any(d["digest"] == entry["digest"] for d in entries):
                return False
            await self._write(repo, subject, [*entries, entry])
        return True

    async def withdraw(self, repo: str, subject: Digest, digests: set[str]) -> bool:
        """Drop ``digests`` from the fallback index of ``subject``; True when it was rewritten
        (an emptied index stays, empty). False on a target with the API."""
        if await self.has_api(repo, subject):
            return False
        async with self._lock:
            entries = await self._fallback(repo, subject)
            kept = [d for d in entries if d["digest"] not in digests]
            if len(kept) == len(entries):
                return False
            await self._write(repo, subject, kept)
        return True
