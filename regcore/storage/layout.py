"""The on-disk layout: the only module that knows paths.

Quayside uses registry:2's filesystem-driver layout, so a root written by one is served by
the other::

    <root>/docker/registry/v2/
    ├── blobs/<alg>/<hex[:2]>/<hex>/data                        blob bytes (complete only)
    ├── repositories/<name>/                                    name may have several components
    │   ├── _layers/<alg>/<hex>/link                            "sha256:…": blob linked into repo
    │   ├── _manifests/revisions/<alg>/<hex>/link               manifest known to repo
    │   ├── _manifests/tags/<tag>/current/link                  digest the tag points at
    │   ├── _manifests/tags/<tag>/index/<alg>/<hex>/link        every digest the tag has had
    │   └── _uploads/<uuid>/{data,startedat,hashstates/…}       upload sessions in progress
    └── _incomplete/<random>                                   Quayside-only: temp files of
                                                                fills and commits, evicted
                                                                files awaiting unlink
                                                                (not served)

The edge's cache uses the same tree without the ``docker/registry/v2`` prefix
(``Layout(directory, v2_prefix=False)``): ``blobs/`` and ``_incomplete/`` only.

Callers pass validated names, tags and :class:`Digest` values; every path is still checked
to stay under the root (defence in depth against traversal).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from regcore import errors
from regcore.digest import Digest

V2 = Path("docker") / "registry" / "v2"


class Layout:
    """Path arithmetic for one storage root. Pure: touches no disk except :meth:`ensure` and
    the two walks (:meth:`blob_files`, :meth:`temp_files`), which read directories."""

    def __init__(self, root: str | os.PathLike[str], *, v2_prefix: bool = True) -> None:
        self.root = Path(root).resolve()
        self.base = self.root / V2 if v2_prefix else self.root

    # -- blobs -------------------------------------------------------------------------
    @property
    def blobs(self) -> Path:
        return self.base / "blobs"

    def blob_dir(self, digest: Digest) -> Path:
        return self._safe(self.blobs / digest.algorithm / digest.hex[:2] / digest.hex)

    def blob_data(self, digest: Digest) -> Path:
        return self.blob_dir(digest) / "data"

    def blob_files(self) -> Iterator[tuple[Digest, Path]]:
        """Every blob data file in the tree with its digest (whether or not the file is still
        there when the caller looks). Entries whose names are no digest are skipped; a
        missing tree yields nothing. Blocking: iterate in a worker thread."""
        for alg_dir in _listdir(self.blobs):
            for prefix in _listdir(alg_dir):
                for blob_dir in _listdir(prefix):
                    try:
                        digest = Digest.parse(f"{alg_dir.name}:{blob_dir.name}")
                    except errors.RegistryError:
                        continue
                    yield digest, blob_dir / "data"

    @property
    def incomplete(self) -> Path:
        return self.base / "_incomplete"

    def temp_file(self, prefix: str = "") -> Path:
        """A fresh, unique file name under ``_incomplete/`` (not created)."""
        return self.incomplete / f"{prefix}{uuid.uuid4().hex}"

    def temp_files(self) -> list[Path]:
        """The files under ``_incomplete/`` (dot files, such as probes, excluded). Blocking."""
        return _listdir(self.incomplete)

    # -- repositories --------------------------------------------------------------------
    @property
    def repositories(self) -> Path:
        return self.base / "repositories"

    def repo_dir(self, name: str) -> Path:
        return self._safe(self.repositories / name, self.repositories)

    def layer_link(self, name: str, digest: Digest) -> Path:
        return self._safe(self.repo_dir(name) / "_layers" / digest.algorithm / digest.hex / "link")

    def layers_dir(self, name: str) -> Path:
        return self.repo_dir(name) / "_layers"

    def revisions_dir(self, name: str) -> Path:
        return self.repo_dir(name) / "_manifests" / "revisions"

    def revision_link(self, name: str, digest: Digest) -> Path:
        return self._safe(self.revisions_dir(name) / digest.algorithm / digest.hex / "link")

    def tags_dir(self, name: str) -> Path:
        return self.repo_dir(name) / "_manifests" / "tags"

    def tag_dir(self, name: str, tag: str) -> Path:
        return self._safe(self.tags_dir(name) / tag, self.tags_dir(name))

    def tag_current_link(self, name: str, tag: str) -> Path:
        return self.tag_dir(name, tag) / "current" / "link"

    def tag_index_link(self, name: str, tag: str, digest: Digest) -> Path:
        return self.tag_dir(name, tag) / "index" / digest.algorithm / digest.hex / "link"

    def uploads_dir(self, name: str) -> Path:
        return self.repo_dir(name) / "_uploads"

    def upload_dir(self, name: str, upload_id: str) -> Path:
        return self._safe(self.uploads_dir(name) / upload_id, self.uploads_dir(name))

    def upload_data(self, name: str, upload_id: str) -> Path:
        return self.upload_dir(name, upload_id) / "data"

    def upload_startedat(self, name: str, upload_id: str) -> Path:
        return self.upload_dir(name, upload_id) / "startedat"

    # -- helpers -----------------------------------------------------------------------------
    def _safe(self, path: Path, within: Path | None = None) -> Path:
        """Refuse any path that would leave ``within`` (default: the storage root)."""
        parent = within or self.base
        resolved = Path(os.path.normpath(path))
        if resolved != parent and parent not in resolved.parents:
            raise errors.NameInvalid("path escapes storage root")
        return resolved

    def ensure(self) -> None:
        for d in (self.blobs, self.repositories, self.incomplete):
            d.mkdir(parents=True, exist_ok=True)


def _listdir(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if not p.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
