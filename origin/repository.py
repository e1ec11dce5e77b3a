"""Repositories on top of the blob store: blob links, manifest revisions, tags.

Everything is stored as registry:2 does (see :mod:`regcore.storage.layout`): a link file holds
the digest string. Link writes are atomic (temp file + ``os.replace``), so a reader sees the old
or the new target, never a torn one. Callers pass validated names and tags.

Raises :class:`errors.ManifestUnknown`, :class:`errors.BlobUnknown`, :class:`errors.NameUnknown`
as the spec asks; never ``FileNotFoundError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from pathlib import Path

from regcore import errors
from regcore.digest import Digest
from regcore.storage.blobstore import FilesystemBlobStore
from regcore.storage.layout import Layout


class Repositories:
    def __init__(self, layout: Layout, store: FilesystemBlobStore) -> None:
        self.layout = layout
        self.store = store

    # -- links -----------------------------------------------------------------------------
    async def link_blob(self, name: str, digest: Digest) -> None:
        await asyncio.to_thread(_write_link, self.layout.layer_link(name, digest), digest)

    async def blob_linked(self, name: str, digest: Digest) -> bool:
        return await asyncio.to_thread(_read_link_matches, self.layout.layer_link(name, digest), digest)

    async def unlink_blob(self, name: str, digest: Digest) -> bool:
        return await asyncio.to_thread(_remove_link_dir, self.layout.layer_link(name, digest))

    async def link_revision(self, name: str, digest: Digest) -> None:
        await asyncio.to_thread(_write_link, self.layout.revision_link(name, digest), digest)

    async def revision_exists(self, name: str, digest: Digest) -> bool:
        return await asyncio.to_thread(_read_link_matches, self.layout.revision_link(name, digest), digest)

    async def unlink_revision(self, name: str, digest: Digest) -> bool:
        return await asyncio.to_thread(_remove_link_dir, self.layout.revision_link(name, digest))

    # -- tags ------------------------------------------------------------------------------
    async def tag(self, name: str, tag: str, digest: Digest) -> None:
        def _do() -> None:
            _write_link(self.layout.tag_index_link(name, tag, digest), digest)
            _write_link(self.layout.tag_current_link(name, tag), digest)

        await asyncio.to_thread(_do)

    async def resolve_tag(self, name: str, tag: str) -> Digest:
        link = self.layout.tag_current_link(name, tag)
        value = await asyncio.to_thread(_read_link, link)
        if value is None:
            raise errors.ManifestUnknown(f"{name}:{tag}")
        return value

    async def untag(self, name: str, tag: str) -> bool:
        d = self.layout.tag_dir(name, tag)
        return await asyncio.to_thread(_rmtree, d)

    async def list_tags(self, name: str) -> list[str]:
        """Sorted tags that have a current link. Raises NameUnknown for an unknown repository."""

        def _do() -> list[str]:
            if not self.layout.repo_dir(name).is_dir() or not (self.layout.repo_dir(name) / "_manifests").is_dir():
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


def _write_link(path: Path, digest: Digest) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".link.{uuid.uuid4().hex}")
    tmp.write_text(str(digest))
    os.replace(tmp, path)


def _read_link(path: Path) -> Digest | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return Digest.parse(text)
    except errors.RegistryError:
        return None


def _read_link_matches(path: Path, digest: Digest) -> bool:
    return _read_link(path) == digest


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
