"""skopeo copies images through a real ``quayside edge serve`` process from docker-registry:
via the default upstream, via the path prefix ``EDGE/<upstream-name>/repo``; and ``?ns=``
(which skopeo cannot send) with raw HTTP. Digests and bytes are identical to the upstream's."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import skopeo
from harness.fixtures import ImageFactory
from harness.images import KiB, sha256_digest
from harness.registry import DockerRegistry
from harness.servers import EdgeProcess, ServerGroup
from regcore.mediatypes import DEFAULT_ACCEPT

pytestmark = pytest.mark.slow

ACCEPT = ", ".join(DEFAULT_ACCEPT)


def _get(url: str, accept: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url)
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=20) as resp:
        return resp.status, resp.read(), dict(resp.headers)


def _assert_dir_matches(target: Path, manifest: bytes, blobs: dict[str, bytes]) -> None:
    assert (target / "manifest.json").read_bytes() == manifest
    for digest, data in blobs.items():
        assert (target / digest.split(":", 1)[1]).read_bytes() == data


def test_skopeo_copies_through_default_upstream_and_path_prefix(
    registry_factory: Callable[..., DockerRegistry],
    servers: ServerGroup,
    image_factory: ImageFactory,
    tmp_path: Path,
) -> None:
    primary, second = registry_factory(), registry_factory()
    img_a = image_factory.image(layer_sizes=(300 * KiB, 20 * KiB))
    img_b = image_factory.image(flavour="docker", layer_sizes=(200 * KiB,))
    skopeo.push(img_a, primary.host, "team/app", "v1", workdir=tmp_path)
    skopeo.push(img_b, second.host, "team/tool", "v2", workdir=tmp_path)
    edge: EdgeProcess = servers.edge([("primary", primary.url), ("second", second.url)])

    # default upstream
    out_a = skopeo.pull_to_dir(edge.host, "team/app", "v1", tmp_path / "a")
    _assert_dir_matches(out_a, img_a.manifest, img_a.blobs())
    assert skopeo.inspect_raw(f"{edge.host}/team/app:v1") == img_a.manifest
    # path prefix: EDGE/<upstream-name>/repo
    out_b = skopeo.pull_to_dir(edge.host, "second/team/tool", "v2", tmp_path / "b")
    _assert_dir_matches(out_b, img_b.manifest, img_b.blobs())
    # by digest through the prefix as well
    assert skopeo.inspect_raw(f"{edge.host}/second/team/tool@{img_b.digest}") == img_b.manifest

    # every blob went upstream once, even though skopeo was run twice for the manifests
    primary.wait_quiet()
    for digest in img_a.blobs():
        assert primary.count("GET", f"/blobs/{digest}") == 1
    assert edge.metric("quayside_edge_cache_misses", kind="blob") == len(img_a.blobs()) + len(
        img_b.blobs()
    )

    # a second pull is served from the cache
    primary.mark_log()
    out_a2 = skopeo.pull_to_dir(edge.host, "team/app", "v1", tmp_path / "a2")
    _assert_dir_matches(out_a2, img_a.manifest, img_a.blobs())
    primary.wait_quiet()
    assert primary.count("GET", "/blobs/") == 0


def test_multi_arch_index_through_edge_keeps_every_digest(
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    image_factory: ImageFactory,
    tmp_path: Path,
) -> None:
    index = image_factory.index(layer_sizes=(40 * KiB,))
    skopeo.push(index, docker_registry.host, "team/multi", "v1", workdir=tmp_path)
    edge = servers.edge({"local": docker_registry.url})
    assert skopeo.inspect_raw(f"{edge.host}/team/multi:v1") == index.manifest
    layout = skopeo.pull_to_layout(
        edge.host, "team/multi", "v1", tmp_path / "layout", multi_arch="all", preserve_digests=True
    )
    index_json = json.loads((layout / "index.json").read_text())
    assert index_json["manifests"][0]["digest"] == index.digest
    for child in index.images:
        assert (
            layout / "blobs" / "sha256" / child.digest.split(":", 1)[1]
        ).read_bytes() == child.manifest
        for digest, data in child.blobs().items():
            assert (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes() == data


def test_containerd_style_ns_requests_select_the_upstream(
    registry_factory: Callable[..., DockerRegistry],
    servers: ServerGroup,
    image_factory: ImageFactory,
    tmp_path: Path,
) -> None:
    default, other = registry_factory(), registry_factory()
    img = image_factory.image(layer_sizes=(100 * KiB,))
    skopeo.push(img, other.host, "team/app", "v1", workdir=tmp_path)
    edge = servers.edge([("default", default.url), ("other", other.url)])
    ns = f"?ns={other.host}"
    # containerd: HEAD the tag, GET the manifest by digest, GET the blobs
    req = urllib.request.Request(f"{edge.url}/v2/team/app/manifests/v1{ns}", method="HEAD")
    req.add_header("Accept", ACCEPT)
    with urllib.request.urlopen(req, timeout=20) as resp:
        assert resp.headers["Docker-Content-Digest"] == img.digest
        assert resp.headers["OCI-Namespace"] == other.host
    status, body, headers = _get(f"{edge.url}/v2/team/app/manifests/{img.digest}{ns}", ACCEPT)
    assert (status, body, headers["Content-Type"]) == (200, img.manifest, img.media_type)
    for digest, data in img.blobs().items():
        status, body, headers = _get(f"{edge.url}/v2/team/app/blobs/{digest}{ns}")
        assert status == 200 and sha256_digest(body) == digest and body == data
        assert headers["OCI-Namespace"] == other.host
    # an ns nobody configured is refused, and nothing is dialled
    with pytest.raises(urllib.error.HTTPError) as exc:
        _get(f"{edge.url}/v2/team/app/manifests/v1?ns=registry.example.com")
    assert exc.value.code == 404
    assert json.loads(exc.value.read())["errors"][0]["code"] == "NAME_UNKNOWN"
    default.wait_quiet()
    assert default.count(None, "/v2/team") == 0


def test_sigterm_mid_fill_finishes_the_transfer_and_commits_it(
    docker_registry: DockerRegistry,
    servers: ServerGroup,
    image_factory: ImageFactory,
    tmp_path: Path,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from harness.procs import wait_until
    from harness.slowproxy import SlowProxy

    img = image_factory.image(layer_sizes=(900 * KiB,))
    skopeo.push(img, docker_registry.host, "team/app", "v1", workdir=tmp_path)
    layer = img.layers[0]
    with SlowProxy(docker_registry.url, rate="1MiB") as slow:
        edge = servers.edge({"local": slow.url})
        url = f"{edge.url}/v2/team/app/blobs/{layer.digest}"
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_get, url)
            wait_until(lambda: edge.metric("quayside_edge_fills_active") == 1, timeout=5)
            t0 = time.monotonic()
            assert edge.stop(timeout=10) == 0  # SIGTERM: in-flight request and fill drain
            status, body, _ = pending.result(timeout=10)
        assert time.monotonic() - t0 < 5
        assert status == 200 and body == layer.data
    docker_registry.mark_log()
    edge.start()  # same cache dir: the drained fill was committed
    status, body, _ = _get(url)
    assert status == 200 and body == layer.data
    assert edge.metric("quayside_edge_cache_hits", kind="blob") == 1
    docker_registry.wait_quiet()
    assert docker_registry.count("GET", "/blobs/") == 0
