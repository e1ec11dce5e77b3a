"""harness.nginx: caching proxy in front of docker-registry, and static file serving."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from harness import skopeo
from harness.fixtures import ImageFactory, NginxFactory
from harness.registry import DockerRegistry


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read(), dict(resp.headers)


def test_proxy_caches_blob_and_logs_it(
    docker_registry: DockerRegistry,
    nginx_factory: NginxFactory,
    image_factory: ImageFactory,
    tmp_path: Path,
) -> None:
    img = image_factory.image(layer_sizes=[300_000])
    skopeo.push(img, docker_registry.host, "team/app", "v1", workdir=tmp_path)
    nginx = nginx_factory.proxy(docker_registry.url)
    docker_registry.wait_quiet()
    docker_registry.mark_log()
    layer = img.layers[0]
    url = f"{nginx.url}/v2/team/app/blobs/{layer.digest}"
    first = _get(url)
    second = _get(url)
    assert first[1] == layer.data and second[1] == layer.data
    assert (first[2]["X-Cache-Status"], second[2]["X-Cache-Status"]) == ("MISS", "HIT")
    assert nginx.access.wait_count("GET", layer.digest, 2) == 2
    assert nginx.cache_statuses() == ["MISS", "HIT"]
    assert [r.bytes for r in nginx.access_log()] == [layer.size, layer.size]
    docker_registry.wait_quiet()
    assert docker_registry.count("GET", layer.digest) == 1
    assert nginx.rss_bytes() > 0
    # skopeo pulls through it too
    assert skopeo.inspect_raw(f"docker://{nginx.host}/team/app:v1") == img.manifest


def test_static_serves_directory_at_prefix(nginx_factory: NginxFactory, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "blob.bin").write_bytes(data)
    nginx = nginx_factory.static(tmp_path / "files", url_prefix="/static")
    status, body, _ = _get(f"{nginx.url}/static/blob.bin")
    assert status == 200 and body == data
    assert nginx.access.wait_count("GET", "/static/blob.bin", 1) == 1
