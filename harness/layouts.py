"""On-disk forms of :mod:`harness.images` items: OCI layouts and skopeo ``dir:`` directories.

:func:`write_layout` stores images/indexes as an OCI layout directory (``oci-layout``,
``index.json`` with ``org.opencontainers.image.ref.name`` per tag, ``blobs/sha256/<hex>``) that
``skopeo copy oci:DIR:TAG ...`` reads; :func:`write_dir` writes skopeo's ``dir:`` format, the
only source from which skopeo pushes Docker schema2 images and manifest lists unchanged.
:func:`read_layout_blob` and :func:`layout_tags` read a layout back (one written here or by
skopeo). Layout blobs are content-addressed and written through a temporary file and
``os.replace``: a blob already present with its size is not written again, and a reader never
sees a half-written one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.images import OCI_INDEX, REF_NAME, ImageIndex, Manifested


def _write_blob(root: Path, digest: str, data: bytes) -> None:
    path = root / "blobs" / "sha256" / digest.split(":", 1)[1]
    if path.exists() and path.stat().st_size == len(data):
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_layout(layout_dir: str | os.PathLike[str], tagged: dict[str, Manifested]) -> Path:
    """Write (or extend) an OCI layout at ``layout_dir`` holding ``tag -> image/index``.

    Existing ``index.json`` entries for other tags are kept; an entry for the same tag is
    replaced. Blobs are content-addressed, so rewriting the same image is a no-op.
    """
    root = Path(layout_dir)
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index_path = root / "index.json"
    entries: list[dict[str, Any]] = []
    if index_path.exists():
        entries = json.loads(index_path.read_text()).get("manifests", [])
    for tag, item in tagged.items():
        children = item.images if isinstance(item, ImageIndex) else (item,)
        for child in children:
            for digest, data in child.blobs().items():
                _write_blob(root, digest, data)
            _write_blob(root, child.digest, child.manifest)
        _write_blob(root, item.digest, item.manifest)
        entries = [e for e in entries if e.get("annotations", {}).get(REF_NAME) != tag]
        entries.append(dict(item.descriptor(), annotations={REF_NAME: tag}))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    index_path.write_text(json.dumps(index, indent=2))
    return root


def write_dir(target_dir: str | os.PathLike[str], item: Manifested) -> Path:
    """Write ``item`` in skopeo's ``dir:`` format (for ``skopeo copy dir:DIR docker://...``).

    skopeo 1.9's ``oci:`` source only resolves tags whose ``index.json`` descriptor has an OCI
    media type, so Docker schema2 images and manifest lists cannot be pushed from an OCI
    layout. The ``dir:`` source guesses the type from the manifest bytes and pushes them
    unchanged: ``manifest.json`` (top level), ``<hex>.manifest.json`` per child of an index,
    and one file per blob named by its hex digest.
    """
    root = Path(target_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "version").write_text("Directory Transport Version: 1.1\n")
    (root / "manifest.json").write_bytes(item.manifest)
    children = item.images if isinstance(item, ImageIndex) else (item,)
    for child in children:
        if isinstance(item, ImageIndex):
            (root / f"{child.digest.split(':', 1)[1]}.manifest.json").write_bytes(child.manifest)
        for digest, data in child.blobs().items():
            path = root / digest.split(":", 1)[1]
            if not path.exists():
                path.write_bytes(data)
    return root


def read_layout_blob(layout_dir: str | os.PathLike[str], digest: str) -> bytes:
    """Bytes of ``digest`` in an OCI layout (raises FileNotFoundError when absent)."""
    return (Path(layout_dir) / "blobs" / digest.replace(":", "/", 1)).read_bytes()


def layout_tags(layout_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``tag -> descriptor`` from an OCI layout's ``index.json``."""
    index = json.loads((Path(layout_dir) / "index.json").read_text())
    return {
        e["annotations"][REF_NAME]: e
        for e in index.get("manifests", [])
        if REF_NAME in e.get("annotations", {})
    }
