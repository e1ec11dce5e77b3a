"""One storage root, two registries: Debian's docker-registry (registry:2) and the origin.

- The origin writes a root (skopeo pushes OCI, Docker schema2 and a multi-platform index, plus
  an artifact with ``subject`` over plain HTTP so the Quayside-only referrers index exists);
  the origin stops; docker-registry serves the same root: skopeo reads identical bytes, and
  tags list and catalog agree.
- docker-registry writes a root; it stops; the origin serves it: identical bytes through
  skopeo, identical tags lists and catalog; then the origin pushes into that root and
  docker-registry serves the result again.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import skopeo
from harness.images import Image, ImageIndex, MiB, make_image, make_index
from harness.images import sha256_digest as sha256
from harness.registry import DockerRegistry
from harness.servers import OriginProcess

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None or shutil.which("docker-registry") is None:  # pragma: no cover
    pytest.skip("skopeo and docker-registry are required", allow_module_level=True)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
Started = list[OriginProcess | DockerRegistry]


@pytest.fixture
def started() -> Iterator[Started]:
    """Everything started in a test, stopped at teardown even when the test fails."""
    procs: Started = []
    try:
        yield procs
    finally:
        for p in procs:
            p.close()


def start_origin(root: Path, workdir: Path, started: Started) -> OriginProcess:
    """An origin serving ``root``, closed by the ``started`` fixture's teardown."""
    origin = OriginProcess(root=root, workdir=workdir)
    started.append(origin)
    origin.start()
    return origin


def stop_cleanly(origin: OriginProcess) -> None:
    """Stop the origin; it must not have answered any request with a 5xx."""
    origin.stop()
    assert origin.server_errors() == []


def http_json(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as resp:
        return json.loads(resp.read())


def http(base: str, method: str, path: str, body: bytes = b"", ctype: str | None = None) -> Any:
    req = urllib.request.Request(base + path, data=body or None, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, dict(resp.headers)


def images() -> dict[str, Image | ImageIndex]:
    return {
        "oci/app:v1": make_image(flavour="oci", layer_sizes=(2 * MiB, 1000), seed=900),
        "docker/app:v1": make_image(flavour="docker", layer_sizes=(2 * MiB,), seed=910),
        "multi/arch:all": make_index(flavour="oci", layer_sizes=(512 * 1024,), seed=920),
    }


def push_all(host: str, items: dict[str, Image | ImageIndex], workdir: Path) -> None:
    for ref, item in items.items():
        repo, tag = ref.split(":")
        skopeo.push(item, host, repo, tag, workdir=workdir)


def assert_served(host: str, items: dict[str, Image | ImageIndex], workdir: Path) -> None:
    """Bytes by tag and by digest, children of indexes, and a full pull of each image."""
    for ref, item in items.items():
        repo, _ = ref.split(":")
        assert skopeo.inspect_raw(f"{host}/{ref}") == item.manifest
        assert skopeo.inspect_raw(f"{host}/{repo}@{item.digest}") == item.manifest
        children = item.images if isinstance(item, ImageIndex) else (item,)
        for child in children:
            target = workdir / f"pull-{host.split(':')[1]}-{child.digest[7:19]}"
            skopeo.pull_to_dir(host, repo, child.digest, target)
            assert (target / "manifest.json").read_bytes() == child.manifest
            for digest, data in child.blobs().items():
                assert sha256((target / digest[7:]).read_bytes()) == digest == sha256(data)


def listings(base: str, items: dict[str, Image | ImageIndex]) -> dict[str, Any]:
    out: dict[str, Any] = {"_catalog": http_json(base, "/v2/_catalog")}
    for ref in items:
        repo = ref.split(":")[0]
        out[repo] = http_json(base, f"/v2/{repo}/tags/list")
    return out


def push_referrer(origin: OriginProcess, repo: str, subject: Image) -> str:
    """An artifact manifest with ``subject`` pushed over the API (monolithic blob uploads)."""
    blob, empty = b"signature bytes", b"{}"
    for data in (blob, empty):
        status, _ = http(
            origin.url,
            "POST",
            f"/v2/{repo}/blobs/uploads/?digest={sha256(data)}",
            data,
            "application/octet-stream",
        )
        assert status == 201
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": sha256(empty),
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.example.sig",
                    "digest": sha256(blob),
                    "size": len(blob),
                }
            ],
            "subject": {
                "mediaType": subject.media_type,
                "digest": subject.digest,
                "size": subject.size,
            },
        }
    ).encode()
    status, headers = http(
        origin.url, "PUT", f"/v2/{repo}/manifests/{sha256(body)}", body, OCI_MANIFEST
    )
    assert status == 201
    assert headers["OCI-Subject"] == subject.digest
    return sha256(body)


def test_docker_registry_serves_a_root_the_origin_wrote(tmp_path, started):
    root = tmp_path / "root"
    items = images()
    origin = start_origin(root, tmp_path / "origin", started)
    push_all(origin.host, items, tmp_path / "src")
    oci_image = items["oci/app:v1"]
    assert isinstance(oci_image, Image)
    referrer = push_referrer(origin, "oci/app", oci_image)
    index = http_json(origin.url, f"/v2/oci/app/referrers/{oci_image.digest}")
    assert [d["digest"] for d in index["manifests"]] == [referrer]
    before = listings(origin.url, items)
    stop_cleanly(origin)

    registry = DockerRegistry(root=root, workdir=tmp_path / "registry")
    started.append(registry)
    registry.start()
    assert_served(registry.host, items, tmp_path)
    assert listings(registry.url, items) == before
    assert skopeo.inspect_raw(f"{registry.host}/oci/app@{referrer}") == stored_blob(root, referrer)


def stored_blob(root: Path, digest: str) -> bytes:
    hexd = digest[7:]
    return (root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data").read_bytes()


def test_origin_serves_a_root_docker_registry_wrote(tmp_path, started):
    root = tmp_path / "root"
    items = images()
    registry = DockerRegistry(root=root, workdir=tmp_path / "registry")
    started.append(registry)
    registry.start()
    push_all(registry.host, items, tmp_path / "src")
    before = listings(registry.url, items)
    registry.stop()

    origin = start_origin(root, tmp_path / "origin", started)
    assert_served(origin.host, items, tmp_path)
    assert listings(origin.url, items) == before

    # The origin writes into the registry:2 root (new tag, new image in an existing repo) ...
    extra = make_image(flavour="docker", layer_sizes=(1 * MiB,), seed=930)
    skopeo.push(extra, origin.host, "docker/app", "v2", workdir=tmp_path / "extra")
    after = listings(origin.url, items)
    assert after["docker/app"]["tags"] == ["v1", "v2"]
    stop_cleanly(origin)

    # ... and docker-registry serves the result.
    registry.start()
    assert skopeo.inspect_raw(f"{registry.host}/docker/app:v2") == extra.manifest
    assert listings(registry.url, items) == after
