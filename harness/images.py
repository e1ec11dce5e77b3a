"""Offline test images: deterministic layers, configs, manifests, indexes, OCI layouts.

Everything is built in memory from a seed, so the same call yields the same digests on every
machine and run (tar mtime 0, uid/gid 0, gzip header mtime 0). Layer payloads are pseudo-random
bytes, so gzip cannot shrink them: ``make_layer(8 * MiB)`` really is ~8 MiB on the wire.

Two manifest flavours are produced byte-for-byte by us (never by a tool):

- ``"oci"``: ``application/vnd.oci.image.manifest.v1+json`` with OCI config/layer types, and
  ``application/vnd.oci.image.index.v1+json`` for multi-platform images;
- ``"docker"``: ``application/vnd.docker.distribution.manifest.v2+json`` with
  ``application/vnd.docker.container.image.v1+json`` and
  ``application/vnd.docker.image.rootfs.diff.tar.gzip``, and
  ``application/vnd.docker.distribution.manifest.list.v2+json`` for multi-platform images.

:mod:`harness.layouts` writes them to disk as an OCI layout or a skopeo ``dir:`` directory.
See :mod:`harness.skopeo` for what skopeo keeps and what it converts.
"""

from __future__ import annotations

import hashlib
import json
import random
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

KiB = 1024
MiB = 1024 * KiB

Flavour = Literal["oci", "docker"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME = "org.opencontainers.image.ref.name"

_TYPES: dict[str, dict[str, str]] = {
    "oci": {
        "manifest": OCI_MANIFEST,
        "index": OCI_INDEX,
        "config": OCI_CONFIG,
        "layer": OCI_LAYER_GZIP,
    },
    "docker": {
        "manifest": DOCKER_MANIFEST,
        "index": DOCKER_LIST,
        "config": DOCKER_CONFIG,
        "layer": DOCKER_LAYER_GZIP,
    },
}
_CHUNK = 1 * MiB


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    """A gzip'd tar layer. ``digest``/``size`` describe ``data``; ``diff_id`` the plain tar."""

    data: bytes = field(repr=False)
    digest: str
    size: int
    diff_id: str
    seed: int


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def to_dict(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True)
class Image:
    """One single-platform image: manifest bytes exactly as stored/pushed, config, layers."""

    flavour: Flavour
    media_type: str
    manifest: bytes = field(repr=False)
    digest: str
    config: bytes = field(repr=False)
    config_digest: str
    layers: tuple[Layer, ...]
    platform: Platform

    @property
    def size(self) -> int:
        """Manifest length in bytes (the descriptor size)."""
        return len(self.manifest)

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def total_size(self) -> int:
        """Bytes a cold pull transfers: manifest + config + layers."""
        return len(self.manifest) + len(self.config) + sum(layer.size for layer in self.layers)

    def blobs(self) -> dict[str, bytes]:
        """Config and layer blobs by digest (not the manifest)."""
        out = {self.config_digest: self.config}
        out.update((layer.digest, layer.data) for layer in self.layers)
        return out

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class ImageIndex:
    """A multi-platform index (OCI index or Docker manifest list) and its child images."""

    flavour: Flavour
    media_type: str
    manifest: bytes = field(repr=False)
    digest: str
    images: tuple[Image, ...]

    @property
    def size(self) -> int:
        return len(self.manifest)

    def blobs(self) -> dict[str, bytes]:
        """All config and layer blobs of all children, by digest."""
        out: dict[str, bytes] = {}
        for image in self.images:
            out.update(image.blobs())
        return out

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


Manifested = Image | ImageIndex


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _tar_stream(size_bytes: int, seed: int) -> Iterator[bytes]:
    """A one-file tar whose total length is about ``size_bytes`` (at least one record)."""
    payload = max(0, size_bytes - 3 * tarfile.BLOCKSIZE)
    yield _tar_header(f"data/layer-{seed}.bin", payload)
    rng = random.Random(seed)
    left = payload
    while left > 0:
        n = min(_CHUNK, left)
        yield rng.randbytes(n)
        left -= n
    written = tarfile.BLOCKSIZE + payload
    pad = -payload % tarfile.BLOCKSIZE
    written += pad + 2 * tarfile.BLOCKSIZE
    yield b"\0" * (pad + 2 * tarfile.BLOCKSIZE + (-written % tarfile.RECORDSIZE))


def make_layer(size_bytes: int, seed: int = 0, *, compresslevel: int = 0) -> Layer:
    """A deterministic gzip'd tar layer of about ``size_bytes`` compressed bytes.

    Same ``(size_bytes, seed, compresslevel)`` → same digest. The payload is pseudo-random, so
    the compressed size is within a few KiB of ``size_bytes`` (never much smaller).
    ``compresslevel`` 0 (default) writes stored deflate blocks: a valid gzip stream that every
    client decompresses, made ~20x faster than level 1 (which could not shrink the data anyway).
    """
    if size_bytes < 0:
        raise ValueError("size_bytes must be >= 0")
    tar_hash = hashlib.sha256()
    comp = zlib.compressobj(compresslevel, zlib.DEFLATED, 31)  # wbits 31: gzip, header mtime 0
    out = bytearray()
    for chunk in _tar_stream(size_bytes, seed):
        tar_hash.update(chunk)
        out += comp.compress(chunk)
    out += comp.flush()
    data = bytes(out)
    return Layer(
        data=data,
        digest=sha256_digest(data),
        size=len(data),
        diff_id="sha256:" + tar_hash.hexdigest(),
        seed=seed,
    )


def make_config(
    layers: Iterable[Layer], platform: Platform = Platform(), *, label: str = ""
) -> bytes:
    """Image config JSON bytes with ``rootfs.diff_ids`` listing each layer's tar digest."""
    layers = list(layers)
    config: dict[str, Any] = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {
            "Env": ["PATH=/usr/bin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"quayside.test": label},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": f"harness layer {layer.seed}"}
            for layer in layers
        ],
    }
    if platform.variant:
        config["variant"] = platform.variant
    return _canonical(config)


def make_image(
    layers: Iterable[Layer] | None = None,
    *,
    flavour: Flavour = "oci",
    platform: Platform = Platform(),
    layer_sizes: Iterable[int] = (64 * KiB,),
    seed: int = 0,
    label: str = "",
    annotations: dict[str, str] | None = None,
) -> Image:
    """One image. Pass ``layers`` or let it make ``layer_sizes`` layers seeded ``seed, seed+1...``.

    ``label`` goes into the config, so images that share layers can still differ in digest.
    """
    if layers is None:
        layers = [make_layer(size, seed + i) for i, size in enumerate(layer_sizes)]
    layers = tuple(layers)
    types = _TYPES[flavour]
    config = make_config(layers, platform, label=label or f"seed-{seed}")
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": types["manifest"],
        "config": {
            "mediaType": types["config"],
            "digest": sha256_digest(config),
            "size": len(config),
        },
        "layers": [
            {"mediaType": types["layer"], "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
    }
    if annotations and flavour == "oci":
        manifest["annotations"] = dict(annotations)
    raw = _canonical(manifest)
    return Image(
        flavour=flavour,
        media_type=types["manifest"],
        manifest=raw,
        digest=sha256_digest(raw),
        config=config,
        config_digest=sha256_digest(config),
        layers=layers,
        platform=platform,
    )


DEFAULT_PLATFORMS: tuple[Platform, ...] = (
    Platform("linux", "amd64"),
    Platform("linux", "arm64", "v8"),
    Platform("linux", "arm", "v7"),
)


def make_index(
    images: Iterable[Image] | None = None,
    *,
    flavour: Flavour = "oci",
    platforms: Iterable[Platform] = DEFAULT_PLATFORMS,
    layer_sizes: Iterable[int] = (64 * KiB,),
    seed: int = 0,
) -> ImageIndex:
    """A multi-platform index over ``images`` (or one fresh image per platform, distinct seeds).

    All children must have the index's flavour (OCI index ↔ OCI manifests, Docker list ↔
    schema2 manifests), as real registries and tools expect.
    """
    if images is None:
        sizes = list(layer_sizes)
        images = [
            make_image(flavour=flavour, platform=p, layer_sizes=sizes, seed=seed + 1000 * i)
            for i, p in enumerate(platforms)
        ]
    images = tuple(images)
    if any(image.flavour != flavour for image in images):
        raise ValueError(f"all images of a {flavour} index must be {flavour} manifests")
    types = _TYPES[flavour]
    index = {
        "schemaVersion": 2,
        "mediaType": types["index"],
        "manifests": [
            dict(image.descriptor(), platform=image.platform.to_dict()) for image in images
        ],
    }
    raw = _canonical(index)
    return ImageIndex(
        flavour=flavour,
        media_type=types["index"],
        manifest=raw,
        digest=sha256_digest(raw),
        images=images,
    )
