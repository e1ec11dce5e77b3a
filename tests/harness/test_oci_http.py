"""harness.oci_http against the real docker-registry."""

from __future__ import annotations

import aiohttp
import pytest

from harness import oci_http, skopeo
from harness.fixtures import ImageFactory
from harness.registry import DockerRegistry


async def test_push_and_fetch_docker_index(
    docker_registry: DockerRegistry, image_factory: ImageFactory
) -> None:
    idx = image_factory.index(flavour="docker")
    async with aiohttp.ClientSession() as session:
        digest = await oci_http.push_image(session, docker_registry.url, "raw/push", "v1", idx)
        assert digest == idx.digest
        body, ctype, served = await oci_http.get_manifest(
            session, docker_registry.url, "raw/push", "v1"
        )
        assert (body, ctype, served) == (idx.manifest, idx.media_type, idx.digest)
        layer = idx.images[1].layers[0]
        assert (
            await oci_http.get_blob(session, docker_registry.url, "raw/push", layer.digest)
            == layer.data
        )
        with pytest.raises(oci_http.UnexpectedStatus) as info:
            await oci_http.get_blob(session, docker_registry.url, "raw/push", "sha256:" + "0" * 64)
        assert info.value.status == 404
    assert skopeo.inspect_raw(docker_registry.ref("raw/push", "v1")) == idx.manifest
    docker_registry.wait_quiet()
    assert docker_registry.count("PUT", "/blobs/uploads/") == sum(
        len(i.blobs()) for i in idx.images
    )
