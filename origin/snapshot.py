"""What backup, restore and scrub share: a root's repository state, verified copies, progress.

A storage root (registry:2's layout, :mod:`regcore.storage.layout`) holds, per repository, the
blobs it links (``_layers``), its manifest revisions and its tags. :func:`read_repository`
reads that state straight from disk (blocking; these are command-line tools), and
:func:`references` lists the blobs and child manifests a stored manifest needs.

:func:`copy_verified` is the one way bytes move between a root and a backup: the source is
hashed while it is copied into a temp file, the temp file is fsynced, compared with the
expected digest and only then renamed into place (the directory fsynced after). A mismatch
raises :class:`CorruptBlob` and leaves nothing behind; an existing destination is success
(equal names mean equal bytes).

:class:`Progress` is what the operations report to (a rich progress bar in the CLI,
:class:`NoProgress` in library use).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from origin.repository import child_names, read_link, write_link
from regcore import errors
from regcore.digest import Digest
from regcore.storage.blobstore import fsync_path
from regcore.storage.layout import Layout

__all__ = [
    "CorruptBlob",
    "NoProgress",
    "Progress",
    "RepoState",
    "copy_verified",
    "hash_file",
    "iter_blobs",
    "list_repositories",
    "manifest_refs",
    "read_link",
    "read_repository",
    "references",
    "write_link",
]

CHUNK = 1 << 20


class CorruptBlob(Exception):
    """The bytes of ``path`` hash to ``actual``, not to ``expected``."""

    def __init__(self, path: Path, expected: Digest, actual: Digest, size: int) -> None:
        super().__init__(f"{path}: expected {expected}, bytes hash to {actual}")
        self.path = path
        self.expected = expected
        self.actual = actual
        self.size = size


class Progress(Protocol):
    """Where long operations report: ``phase`` starts a named step of ``total`` units
    (bytes or items), ``advance`` moves it on."""

    def phase(self, name: str, total: int, *, unit: str = "bytes") -> None: ...
    def advance(self, amount: int) -> None: ...


class NoProgress:
    """A :class:`Progress` that shows nothing."""

    def phase(self, name: str, total: int, *, unit: str = "bytes") -> None:
        return None

    def advance(self, amount: int) -> None:
        return None


@dataclass
class RepoState:
    """One repository as stored: tag -> manifest digest, revisions, linked blobs."""

    name: str
    tags: dict[str, Digest] = field(default_factory=dict)
    revisions: set[Digest] = field(default_factory=set)
    layers: set[Digest] = field(default_factory=set)


# -- links ----------------------------------------------------------------------------------
def _digest_links(base: Path) -> set[Digest]:
    """``<base>/<alg>/<hex>/link`` files whose content names their own directory."""
    out: set[Digest] = set()
    for alg in child_names(base):
        for hexdir in child_names(base / alg):
            value = read_link(base / alg / hexdir / "link")
            if value is not None and value.algorithm == alg and value.hex == hexdir:
                out.add(value)
    return out


# -- repositories -----------------------------------------------------------------------------
def list_repositories(layout: Layout) -> list[str]:
    """Every repository under the root (a directory holding ``_manifests`` or ``_layers``)."""
    root = layout.repositories
    names: list[str] = []
    for dirpath, dirnames, _ in os.walk(root):
        if "_manifests" in dirnames or "_layers" in dirnames:
            rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
            if rel != ".":
                names.append(rel)
        dirnames[:] = [d for d in dirnames if not d.startswith("_")]
    return sorted(names)


def read_repository(layout: Layout, name: str) -> RepoState:
    """Tags (current links), revisions and blob links of ``name`` as they are now."""
    state = RepoState(name)
    state.layers = _digest_links(layout.layers_dir(name))
    state.revisions = _digest_links(layout.revisions_dir(name))
    tags_dir = layout.tags_dir(name)
    for tag in child_names(tags_dir):
        value = read_link(tags_dir / tag / "current" / "link")
        if value is not None:
            state.tags[tag] = value
    return state


def manifest_refs(raw: bytes) -> tuple[list[Digest], list[Digest]]:
    """(blobs, child manifests) a manifest needs: config and layers (foreign layers with
    ``urls`` excepted) or schema 1 ``fsLayers``; index children. Tolerant: bytes that are not
    a JSON object give ([], [])."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return [], []
    if not isinstance(doc, dict):
        return [], []

    def take(desc: Any, into: list[str]) -> None:
        if isinstance(desc, dict) and isinstance(desc.get("digest"), str) and not desc.get("urls"):
            into.append(desc["digest"])

    blobs: list[str] = []
    children: list[str] = []
    take(doc.get("config"), blobs)
    for key, into in (("layers", blobs), ("manifests", children)):
        items = doc.get(key)
        if isinstance(items, list):
            for d in items:
                take(d, into)
    for fs in doc.get("fsLayers") or []:
        if isinstance(fs, dict) and isinstance(fs.get("blobSum"), str):
            blobs.append(fs["blobSum"])
    return _digests(blobs), _digests(children)


def references(raw: bytes) -> list[Digest]:
    """Every digest :func:`manifest_refs` finds, blobs first."""
    blobs, children = manifest_refs(raw)
    return blobs + children


def _digests(texts: list[str]) -> list[Digest]:
    out: list[Digest] = []
    for text in dict.fromkeys(texts):
        with contextlib.suppress(errors.RegistryError):
            out.append(Digest.parse(text))
    return out


def iter_blobs(layout: Layout) -> Iterator[tuple[Digest, int]]:
    """Committed blobs of a root: (digest, size), from :meth:`Layout.blob_files` (files gone
    by the time they are looked at are skipped). Blocking."""
    for digest, path in layout.blob_files():
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if path.parent.parent.name == digest.hex[:2]:
            yield digest, size


# -- bytes ------------------------------------------------------------------------------------
def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def hash_file(
    path: Path, algorithm: str = "sha256", on_bytes: Callable[[int], None] | None = None
) -> tuple[Digest, int]:
    """(digest, size) of a file's bytes. Raises OSError."""
    h = hashlib.new(algorithm)
    size = 0
    for chunk in _chunks(path):
        h.update(chunk)
        size += len(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))
    return Digest(algorithm, h.hexdigest()), size


def copy_verified(
    src: Path,
    dst: Path,
    digest: Digest,
    tmpdir: Path,
    on_bytes: Callable[[int], None] | None = None,
) -> bool:
    """Copy ``src`` to ``dst`` if ``dst`` does not exist, checking the bytes against ``digest``.

    Returns True when copied, False when ``dst`` already existed. Raises :class:`CorruptBlob`
    (nothing written) and OSError (``FileNotFoundError`` when ``src`` vanished).
    """
    if dst.exists():
        return False
    tmpdir.mkdir(parents=True, exist_ok=True)
    tmp = tmpdir / f"copy-{uuid.uuid4().hex}"
    h = hashlib.new(digest.algorithm)
    size = 0
    try:
        with open(tmp, "wb") as out:
            for chunk in _chunks(src):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        actual = Digest(digest.algorithm, h.hexdigest())
        if actual != digest:
            raise CorruptBlob(src, digest, actual, size)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_path(dst.parent)
    return True
