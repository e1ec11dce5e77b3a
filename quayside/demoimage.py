"""A tiny OCI image written offline, so the first push needs no internet and no image builder.

:func:`write_demo_layout` writes an OCI image layout (``oci-layout``, ``index.json``,
``blobs/sha256/<hex>``) that ``skopeo copy oci:DIR:TAG docker://...`` reads. The image has one
layer holding ``/hello.txt`` and a config for this machine's architecture (linux), so podman
and containerd accept it for the host platform. It has no binaries: it is for pushing and
pulling, not for running.

Guarantees: the bytes are deterministic (tar and gzip timestamps 0, sorted JSON), so the same
tag has the same digest on every machine; every blob is written to a temporary file and
renamed into place, and ``index.json`` last, so an interrupted call leaves no half-written
blob under its digest. An existing layout keeps its other tags; the same tag is replaced.
Raises :class:`OSError` when ``DIR`` cannot be written and :class:`ValueError` when it holds
an ``index.json`` that is not a JSON object.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import tarfile
from dataclasses import dataclass
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
GREETING = (
    b"Hello from Quayside: this image was pushed to your origin and pulled through your edge.\n"
)

# platform.machine() -> the OCI architecture name (the GOARCH values)
_ARCHITECTURES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


@dataclass(frozen=True)
class DemoImage:
    """What was written: the manifest's digest, its size and the tag it is under."""

    directory: Path
    tag: str
    digest: str
    size: int


def host_architecture() -> str:
    machine = platform.machine().lower()
    return _ARCHITECTURES.get(machine, machine or "amd64")


def write_demo_layout(directory: Path, tag: str = "latest") -> DemoImage:
    """Write the demo image into the OCI layout at ``directory`` under ``tag``."""
    layer_tar = _tar({"hello.txt": GREETING})
    layer = _gzip(layer_tar)
    config = _json(
        {
            "architecture": host_architecture(),
            "config": {"Cmd": ["cat", "/hello.txt"], "Labels": {"org.quayside.demo": "true"}},
            "os": "linux",
            "rootfs": {"diff_ids": [_digest(layer_tar)], "type": "layers"},
        }
    )
    manifest = _json(
        {
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [_descriptor(OCI_LAYER_GZIP, layer)],
            "mediaType": OCI_MANIFEST,
            "schemaVersion": 2,
        }
    )
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in (layer, config, manifest):
        _write_atomic(blobs / _digest(blob).split(":", 1)[1], blob)
    _write_atomic(directory / "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
    index = _read_index(directory / "index.json")
    kept = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != tag]
    entry = {**_descriptor(OCI_MANIFEST, manifest), "annotations": {REF_NAME: tag}}
    index["manifests"] = [*kept, entry]
    _write_atomic(directory / "index.json", _json(index))
    return DemoImage(directory, tag, _digest(manifest), len(manifest))


def _read_index(path: Path) -> dict[str, object]:
    try:
        index = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {"schemaVersion": 2, "manifests": []}
    if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
        raise ValueError(f"{path}: not an OCI image index")
    index.setdefault("manifests", [])
    return index


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _json(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"digest": _digest(data), "mediaType": media_type, "size": len(data)}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
