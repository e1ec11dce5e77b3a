"""What the upstreams serve during a run: blobs and images pushed once, before any contender.

Each cold scenario gets distinct blobs per repetition, and every contender has its own cache,
so blob ``k`` is cold for every contender the first time it asks for it; nothing has to be
restarted between repetitions. All content is deterministic (seeded), incompressible and
pushed over HTTP with the plain two-request upload (:mod:`harness.bigblobs`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp

from bench.params import Params
from harness.bigblobs import push_large_blob, push_large_image, random_blob
from harness.images import OCI_INDEX, OCI_MANIFEST, Image, make_image

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))

BLOB_REPO = "bench/blobs"
MANIFEST_REPO = "bench/manifest"
IMAGE_REPO = "bench/image"
WAN_REPO = "bench/wan"


@dataclass(frozen=True)
class BlobRef:
    """A blob the upstream holds under ``repo``."""

    repo: str
    digest: str
    size: int


@dataclass(frozen=True)
class ImageRef:
    """An image the upstream holds as ``repo:tag``."""

    repo: str
    tag: str
    digest: str
    media_type: str
    total_size: int
    blob_digests: tuple[str, ...]
    blob_sizes: tuple[int, ...] = ()


@dataclass
class Dataset:
    """Everything a run reads; lists have one entry per repetition."""

    warm: BlobRef | None = None
    rss: BlobRef | None = None
    cold: list[BlobRef] = field(default_factory=list)
    herd: list[BlobRef] = field(default_factory=list)
    manifest: ImageRef | None = None
    images: list[ImageRef] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "warm": self.warm.__dict__ if self.warm else None,
            "rss": self.rss.__dict__ if self.rss else None,
            "cold": [b.__dict__ for b in self.cold],
            "herd": [b.__dict__ for b in self.herd],
            "manifest": self.manifest.__dict__ if self.manifest else None,
            "images": [i.__dict__ for i in self.images],
        }


def _image_ref(repo: str, tag: str, image: Image) -> ImageRef:
    return ImageRef(
        repo=repo,
        tag=tag,
        digest=image.digest,
        media_type=image.media_type,
        total_size=image.total_size,
        blob_digests=(image.config_digest, *image.layer_digests),
        blob_sizes=(len(image.config), *(layer.size for layer in image.layers)),
    )


def build_images(params: Params, scenarios: frozenset[str]) -> tuple[Image, list[Image]]:
    """The small manifest-scenario image and one pull image per repetition (deterministic;
    the pull images only when ``image_pull`` is among ``scenarios``)."""
    small = make_image(layer_sizes=(4096, 4096), seed=7_000_000, label="bench-manifest")
    pulls = [
        make_image(layer_sizes=params.image_layer_sizes, seed=8_000_000 + 1000 * i, label=f"r{i}")
        for i in range(params.image_repeats if "image_pull" in scenarios else 0)
    ]
    return small, pulls


async def _seed(
    registry_urls: list[str],
    origin_urls: list[str],
    params: Params,
    small: Image,
    pulls: list[Image],
    scenarios: frozenset[str],
) -> Dataset:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def blob(size: int, seed: int) -> BlobRef:
            data = random_blob(size, seed)
            digest = ""
            for url in registry_urls:
                digest = await push_large_blob(session, url, BLOB_REPO, data)
            return BlobRef(BLOB_REPO, digest, size)

        ds = Dataset()
        if "warm_blob" in scenarios:
            ds.warm = await blob(params.warm_blob_size, 1)
        if "edge_rss" in scenarios:
            ds.rss = await blob(params.rss_blob_size, 2)
        if "cold_blob" in scenarios:
            ds.cold = [await blob(params.cold_blob_size, 100 + i) for i in range(params.repeats)]
        if "herd" in scenarios:
            ds.herd = [
                await blob(params.herd_blob_size, 200 + i) for i in range(params.herd_repeats)
            ]
        for url in registry_urls + origin_urls:
            if scenarios & {"manifest_tag", "manifest_digest"}:
                await push_large_image(session, url, MANIFEST_REPO, "v1", small)
                ds.manifest = _image_ref(MANIFEST_REPO, "v1", small)
            if "image_pull" in scenarios:
                for i, image in enumerate(pulls):
                    await push_large_image(session, url, IMAGE_REPO, f"r{i}", image)
                ds.images = [_image_ref(IMAGE_REPO, f"r{i}", im) for i, im in enumerate(pulls)]
    return ds


def seed(
    registry_url: str,
    params: Params,
    scenarios: frozenset[str],
    origin_url: str | None = None,
) -> Dataset:
    """Push what ``scenarios`` need to the registry upstream (images also to the origin).

    Raises:
        harness.oci_http.UnexpectedStatus: an upstream refused a push.
    """
    small, pulls = build_images(params, scenarios)
    return asyncio.run(
        _seed([registry_url], [origin_url] if origin_url else [], params, small, pulls, scenarios)
    )


@dataclass
class WanDataset:
    """What the upstream across the WAN holds; lists have one entry per repetition."""

    probe: BlobRef | None = None
    pulls: list[ImageRef] = field(default_factory=list)
    region: list[ImageRef] = field(default_factory=list)
    cut: list[BlobRef] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "probe": self.probe.__dict__ if self.probe else None,
            "pulls": [i.__dict__ for i in self.pulls],
            "region": [i.__dict__ for i in self.region],
            "cut": [b.__dict__ for b in self.cut],
        }


async def _seed_wan(url: str, params: Params, scenarios: frozenset[str]) -> WanDataset:
    ds = WanDataset()
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def blob(size: int, seed: int) -> BlobRef:
            digest = await push_large_blob(session, url, WAN_REPO, random_blob(size, seed))
            return BlobRef(WAN_REPO, digest, size)

        async def image(tag: str, seed: int) -> ImageRef:
            built = make_image(layer_sizes=params.wan_layer_sizes, seed=seed, label=tag)
            await push_large_image(session, url, WAN_REPO, tag, built)
            return _image_ref(WAN_REPO, tag, built)

        if "wan_link" in scenarios:
            ds.probe = await blob(params.wan_probe_size, 9_000_000)
        if "wan_pull" in scenarios:
            ds.pulls = [
                await image(f"pull{i}", 9_100_000 + 100 * i) for i in range(params.wan_repeats)
            ]
        if "wan_region" in scenarios:
            n = max(params.wan_repeats, params.wan_peer_repeats)
            ds.region = [await image(f"region{i}", 9_200_000 + 100 * i) for i in range(n)]
        if "wan_cut" in scenarios:
            n = max(params.wan_repeats, params.wan_peer_repeats)
            ds.cut = [await blob(params.wan_cut_blob_size, 9_300_000 + i) for i in range(n)]
    return ds


def seed_wan(registry_url: str, params: Params, scenarios: frozenset[str]) -> WanDataset:
    """Push what the WAN ``scenarios`` need to the upstream (call from inside its namespace:
    the bytes must not cross the link). Each image is built, pushed and dropped in turn.

    Raises:
        harness.oci_http.UnexpectedStatus: the upstream refused a push.
    """
    return asyncio.run(_seed_wan(registry_url, params, scenarios))
