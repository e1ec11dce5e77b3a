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
                                                                fills and commits (not served)

Callers pass validated names, tags and :class:`Digest` values; every path is still checked
to stay under the root (defence in depth against traversal).
"""

from __future__ import annotations

import os
from pathlib import Path

from regcore import errors
from regcore.digest import Digest

V2 = Path("docker") / "registry" / "v2"


class Layout:
    """Path arithmetic for one storage root. Pure: touches no disk except :meth:`ensure`."""

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

    @property
    def incomplete(self) -> Path:
        return self.base / "_incomplete"

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
