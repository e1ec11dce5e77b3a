"""Repositories on top of the blob store: blob links, manifest revisions, tags.

Everything is stored as registry:2 does (see :mod:`regcore.storage.layout`): a link file holds
the digest string. Link writes are atomic (temp file + ``os.replace``), so a reader sees the old
or the new target, never a torn one. Callers pass validated names and tags.

Raises :class:`errors.ManifestUnknown`, :class:`errors.BlobUnknown`, :class:`errors.NameUnknown`
as the spec asks; never ``FileNotFoundError``.

Quayside adds one tree that registry:2 does not have (and ignores: its walkers only read
``_manifests/revisions`` and ``_manifests/tags``), the referrers index written on manifest PUT::

    repositories/<name>/_manifests/_referrers/<alg>/<subject hex>/<alg>/<referrer hex>/link

Each link holds the referrer's digest; the referrers API lists a subject's directory and keeps
only referrers that are still revisions of the repository. A root written by registry:2 has no
such index: :meth:`Repositories.rebuild_referrers` recreates it from the revisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from regcore import errors
from regcore.digest import Digest
from regcore.storage.interfaces import BlobReader
from regcore.storage.layout import Layout


class Repositories:
    """``listeners`` are called (on the event loop) with a repository's name after each write
    of its blob links, revisions or tags here, and with None when anything may have changed
    (:meth:`changed`: garbage collection, retention); the web UI's inventory cache is one."""

    def __init__(self, layout: Layout, store: BlobReader) -> None:
        self.layout = layout
        self.store = store
        self.listeners: list[Callable[[str | None], None]] = []

    def changed(self, name: str | None) -> None:
        """Tell the listeners that ``name`` (None: any repository) changed on disk."""
        for listener in self.listeners:
            listener(name)

    # -- links -----------------------------------------------------------------------------
    async def link_blob(self, name: str, digest: Digest) -> None:
        try:
            await asyncio.to_thread(write_link, self.layout.layer_link(name, digest), digest)
        finally:
            self.changed(name)

    async def blob_linked(self, name: str, digest: Digest) -> bool:
        return await asyncio.to_thread(
            _read_link_matches, self.layout.layer_link(name, digest), digest
        )

    async def unlink_blob(self, name: str, digest: Digest) -> bool:
        try:
            return await asyncio.to_thread(_remove_link_dir, self.layout.layer_link(name, digest))
        finally:
            self.changed(name)

    async def link_revision(self, name: str, digest: Digest) -> None:
        try:
            await asyncio.to_thread(write_link, self.layout.revision_link(name, digest), digest)
        finally:
            self.changed(name)

    async def revision_exists(self, name: str, digest: Digest) -> bool:
        return await asyncio.to_thread(
            _read_link_matches, self.layout.revision_link(name, digest), digest
        )

    async def unlink_revision(self, name: str, digest: Digest) -> bool:
        try:
            return await asyncio.to_thread(
                _remove_link_dir, self.layout.revision_link(name, digest)
            )
        finally:
            self.changed(name)

    # -- tags ------------------------------------------------------------------------------
    async def tag(self, name: str, tag: str, digest: Digest) -> None:
        def _do() -> None:
            write_link(self.layout.tag_index_link(name, tag, digest), digest)
            write_link(self.layout.tag_current_link(name, tag), digest)

        try:
            await asyncio.to_thread(_do)
        finally:
            self.changed(name)

    async def resolve_tag(self, name: str, tag: str) -> Digest:
        link = self.layout.tag_current_link(name, tag)
        value = await asyncio.to_thread(read_link, link)
        if value is None:
            raise errors.ManifestUnknown(f"{name}:{tag}")
        return value

    async def untag(self, name: str, tag: str) -> bool:
        d = self.layout.tag_dir(name, tag)
        try:
            return await asyncio.to_thread(_rmtree, d)
        finally:
            self.changed(name)

    async def list_tags(self, name: str) -> list[str]:
        """Sorted tags that have a current link. Raises NameUnknown for an unknown repository."""

        def _do() -> list[str]:
            if (
                not self.layout.repo_dir(name).is_dir()
                or not (self.layout.repo_dir(name) / "_manifests").is_dir()
            ):
                if not self.layout.layers_dir(name).is_dir():
                    raise errors.NameUnknown(name)
            tags_dir = self.layout.tags_dir(name)
            try:
                entries = os.listdir(tags_dir)
            except (FileNotFoundError, NotADirectoryError):
                return []
            return sorted(t for t in entries if (tags_dir / t / "current" / "link").is_file())

        return await asyncio.to_thread(_do)

    async def tags_for(self, name: str, digest: Digest) -> list[str]:
        tags = await self.list_tags(name)
        out = []
        for t in tags:
            with contextlib.suppress(errors.ManifestUnknown):
                if await self.resolve_tag(name, t) == digest:
                    out.append(t)
        return out

    async def list_revisions(self, name: str) -> list[Digest]:
        """Every manifest digest linked into ``name`` (sorted; empty for an unknown repository)."""
        return await asyncio.to_thread(self._list_revisions, name)

    def _list_revisions(self, name: str) -> list[Digest]:
        root = self.layout.revisions_dir(name)
        out: list[Digest] = []
        for alg in child_names(root):
            for hexdir in child_names(root / alg):
                value = read_link(root / alg / hexdir / "link")
                if value is not None and value.algorithm == alg and value.hex == hexdir:
                    out.append(value)
        return sorted(out, key=str)

    # -- referrers -------------------------------------------------------------------------
    def _referrers_root(self, name: str) -> Path:
        # Digest parts are validated hex, so these joins cannot leave the repository.
        return self.layout.repo_dir(name) / "_manifests" / "_referrers"

    def _subject_dir(self, name: str, subject: Digest) -> Path:
        return self._referrers_root(name) / subject.algorithm / subject.hex

    def _referrer_link(self, name: str, subject: Digest, referrer: Digest) -> Path:
        return self._subject_dir(name, subject) / referrer.algorithm / referrer.hex / "link"

    async def link_referrer(self, name: str, subject: Digest, referrer: Digest) -> None:
        """Record that manifest ``referrer`` of ``name`` has ``subject`` (idempotent, atomic)."""
        await asyncio.to_thread(write_link, self._referrer_link(name, subject, referrer), referrer)

    async def unlink_referrer(self, name: str, subject: Digest, referrer: Digest) -> bool:
        return await asyncio.to_thread(
            _remove_link_dir, self._referrer_link(name, subject, referrer)
        )

    async def list_referrers(
        self, name: str, subject: Digest, *, persist: bool = True
    ) -> list[Digest]:
        """Digests of this repository's manifests whose ``subject`` is ``subject`` (sorted).

        Only referrers that are still revisions of ``name`` are returned (a deleted manifest
        drops out even if its index link survived a crash). When the repository has no index
        yet (a root written by registry:2) it is built first, or with ``persist=False``
        (read-only mode) the revisions are scanned in memory instead. Never raises for an
        unknown repository or subject: the answer is then empty.
        """
        if not await asyncio.to_thread(self._referrers_root(name).is_dir):
            if not persist:
                found = await self._scan_referrers(name)
                return sorted(found.get(subject, []), key=str)
            await self.ensure_referrers_index(name)

        def _do() -> list[Digest]:
            base = self._subject_dir(name, subject)
            out: list[Digest] = []
            for alg in child_names(base):
                for hexdir in child_names(base / alg):
                    value = read_link(base / alg / hexdir / "link")
                    if value is None or value.algorithm != alg or value.hex != hexdir:
                        continue
                    if _read_link_matches(self.layout.revision_link(name, value), value):
                        out.append(value)
            return sorted(out, key=str)

        return await asyncio.to_thread(_do)

    async def ensure_referrers_index(self, name: str) -> None:
        """Create the referrers index of ``name`` from its revisions if it does not exist.

        Idempotent and safe to run concurrently with pushes (link writes are atomic and
        equal). Reads every revision once; manifests without ``subject`` are skipped.
        """
        root = self._referrers_root(name)
        if await asyncio.to_thread(root.is_dir):
            return
        for subject, digests in (await self._scan_referrers(name)).items():
            for digest in digests:
                await self.link_referrer(name, subject, digest)
        if await asyncio.to_thread(self.layout.revisions_dir(name).is_dir):
            await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)

    async def _scan_referrers(self, name: str) -> dict[Digest, list[Digest]]:
        """subject -> referrers, from reading every revision of ``name``."""
        found: dict[Digest, list[Digest]] = {}
        for digest in await self.list_revisions(name):
            subject = await self.subject_of(digest)
            if subject is not None:
                found.setdefault(subject, []).append(digest)
        return found

    async def subject_of(self, digest: Digest) -> Digest | None:
        """The ``subject`` digest of the stored manifest ``digest``; None if absent/unreadable."""
        try:
            raw = await self.store.read_bytes(digest, limit=_SUBJECT_SCAN_LIMIT)
        except errors.RegistryError:
            return None
        return subject_digest(raw)

    # -- catalog ---------------------------------------------------------------------------
    async def catalog(self) -> list[str]:
        """Every repository name (a directory holding ``_manifests`` or ``_layers``), sorted."""
        return await asyncio.to_thread(self._walk_repositories)

    def _walk_repositories(self) -> list[str]:
        root = self.layout.repositories
        names: list[str] = []
        for dirpath, dirnames, _ in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            if "_manifests" in dirnames or "_layers" in dirnames:
                if "_manifests" in dirnames:
                    names.append(rel.replace(os.sep, "/"))
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        return sorted(n for n in names if n != ".")

    async def repo_exists(self, name: str) -> bool:
        return await asyncio.to_thread(self.layout.repo_dir(name).is_dir)


_SUBJECT_SCAN_LIMIT = 4 * 1024 * 1024


def subject_digest(raw: bytes) -> Digest | None:
    """``subject.digest`` of a manifest body, or None (no subject, not JSON, bad digest)."""
    if b'"subject"' not in raw:
        return None
    try:
        doc = json.loads(raw)
        return Digest.parse(doc["subject"]["digest"])
    except (ValueError, TypeError, KeyError, RecursionError, errors.RegistryError):
        return None


def child_names(path: Path) -> list[str]:
    """Sorted entries of a directory, hidden ones left out; [] when it is absent."""
    try:
        return sorted(n for n in os.listdir(path) if not n.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def write_link(path: Path, digest: Digest) -> None:
    """Atomically write a link file (temp + ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".link.{uuid.uuid4().hex}")
    tmp.write_text(str(digest))
    os.replace(tmp, path)


def read_link(path: Path) -> Digest | None:
    """The digest in a link file; None when absent or not a digest."""
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return Digest.parse(text)
    except errors.RegistryError:
        return None


def _read_link_matches(path: Path, digest: Digest) -> bool:
    return read_link(path) == digest


def _remove_link_dir(link: Path) -> bool:
    try:
        link.unlink()
    except FileNotFoundError:
        return False
    with contextlib.suppress(OSError):
        link.parent.rmdir()
    return True


def _rmtree(path: Path) -> bool:
    if not path.exists():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True
