"""harness.registry: the real docker-registry, its access log, proxy mode, auth config."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import skopeo
from harness.fixtures import ImageFactory
from harness.procs import wait_until
from harness.registry import DockerRegistry, TokenAuth
from regcore.auth.tokens import Access, TokenIssuer


def _get(
    url: str, *, method: str = "GET", accept: str | None = None, token: str | None = None
) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_push_pull_roundtrip_keeps_digests(
    docker_registry: DockerRegistry, image_factory: ImageFactory, tmp_path: Path
) -> None:
    img = image_factory.image(layer_sizes=[256 * 1024, 10_000])
    skopeo.push(img, docker_registry.host, "team/app", "v1", workdir=tmp_path)
    assert skopeo.inspect_raw(docker_registry.ref("team/app", "v1")) == img.manifest
    pulled = skopeo.pull_to_layout(docker_registry.host, "team/app", "v1", tmp_path / "pulled")
    tags = json.loads((pulled / "index.json").read_text())["manifests"]
    assert tags[0]["digest"] == img.digest
    for digest, data in img.blobs().items():
        assert (pulled / "blobs" / digest.replace(":", "/")).read_bytes() == data
    # storage lives where the harness says
    assert docker_registry.blob_path(img.layers[0].digest).read_bytes() == img.layers[0].data


def test_access_log_counts_exactly_one_blob_get(
    docker_registry: DockerRegistry, image_factory: ImageFactory, tmp_path: Path
) -> None:
    img = image_factory.image(layer_sizes=[100_000])
    skopeo.push(img, docker_registry.host, "team/app", "v1", workdir=tmp_path)
    docker_registry.wait_quiet()
    docker_registry.mark_log()
    layer = img.layers[0]
    status, body, headers = _get(f"{docker_registry.url}/v2/team/app/blobs/{layer.digest}")
    assert status == 200 and body == layer.data
    assert headers["Docker-Content-Digest"] == layer.digest
    assert docker_registry.access.wait_count("GET", layer.digest, 1) == 1
    docker_registry.wait_quiet()
    assert docker_registry.count("GET", layer.digest) == 1
    assert docker_registry.count("HEAD") == 0
    (rec,) = docker_registry.access_log()
    assert (rec.method, rec.status, rec.bytes) == ("GET", 200, layer.size)


def test_reference_proxy_mode_counts_upstream_fetches(
    docker_registry: DockerRegistry,
    registry_factory: Callable[..., DockerRegistry],
    image_factory: ImageFactory,
    tmp_path: Path,
) -> None:
    img = image_factory.image(layer_sizes=[200_000])
    skopeo.push(img, docker_registry.host, "library/app", "v1", workdir=tmp_path)
    mirror = registry_factory(proxy_remoteurl=docker_registry.url)
    docker_registry.wait_quiet()
    docker_registry.mark_log()
    layer = img.layers[0]
    url = f"{mirror.url}/v2/library/app/blobs/{layer.digest}"
    assert _get(url)[1] == layer.data
    # registry:2 stores the blob in the background; until then every miss goes upstream again
    assert wait_until(lambda: mirror.blob_path(layer.digest).exists(), timeout=10)
    mirror.wait_quiet()
    docker_registry.wait_quiet()
    cold = docker_registry.count("GET", layer.digest)
    assert cold in (1, 2)  # measured: 2 (it streams once to the client and once to its store)
    for _ in range(3):
        assert _get(url)[1] == layer.data
    mirror.wait_quiet()
    docker_registry.wait_quiet()
    assert mirror.count("GET", layer.digest) == 4
    assert docker_registry.count("GET", layer.digest) == cold
    assert skopeo.inspect_raw(mirror.ref("library/app", "v1")) == img.manifest


def test_token_auth_challenges_and_accepts_issued_tokens(
    registry_factory: Callable[..., DockerRegistry], tmp_path: Path
) -> None:
    issuer = TokenIssuer.generate("harness-test-issuer", "harness-test-registry")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(issuer.bundle_pem())
    registry = registry_factory(
        auth_token=TokenAuth(
            realm="http://127.0.0.1:1/token",
            service=issuer.service,
            issuer=issuer.issuer,
            rootcertbundle=str(bundle),
        )
    )
    status, _body, headers = _get(f"{registry.url}/v2/")
    assert status == 401
    challenge = headers["Www-Authenticate"]
    assert challenge.startswith('Bearer realm="http://127.0.0.1:1/token"')
    assert f'service="{issuer.service}"' in challenge
    token = issuer.issue("tester", []).token
    assert _get(f"{registry.url}/v2/", token=token)[0] == 200
    blob = f"{registry.url}/v2/team/app/blobs/sha256:{'0' * 64}"
    assert _get(blob, token=token)[0] == 401  # no pull grant for team/app
    granted = issuer.issue("tester", [Access.parse("repository:team/app:pull")]).token
    assert _get(blob, token=granted)[0] == 404


def test_registry_config_rejects_two_auth_modes(tmp_path: Path) -> None:
    auth = TokenAuth(realm="r", service="s", issuer="i", rootcertbundle="x")
    with pytest.raises(ValueError):
        DockerRegistry(workdir=tmp_path, auth_token=auth, htpasswd=tmp_path / "h").config()
