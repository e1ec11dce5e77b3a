"""RegistryClient against real docker-registry processes (plain, Bearer via harness.tokenserver,
htpasswd Basic) plus the pure auth helpers it relies on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from yarl import URL

from harness.registry import DockerRegistry
from harness.tokenserver import TokenServer
from regcore import errors
from regcore.client import RegistryClient, TokenCache, parse_challenges
from regcore.client.auth import may_send_credentials, merge_scopes, scopes_for_path
from regcore.digest import Digest

REPO = "team/app"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

RegistryFactory = Callable[..., DockerRegistry]


def _manifest(config: bytes, layers: list[bytes]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": str(Digest.of(config)),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": str(Digest.of(layer)),
                "size": len(layer),
            }
            for layer in layers
        ],
    }
    return json.dumps(doc, indent=1).encode()


async def _push_image(
    client: RegistryClient, repo: str, tag: str, layer: bytes
) -> tuple[str, bytes]:
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    await client.push_blob(repo, config)
    await client.push_blob(repo, layer)
    body = _manifest(config, [layer])
    return await client.push_manifest(repo, tag, body, OCI_MANIFEST), body


# -- pure helpers ----------------------------------------------------------------------------


def test_parse_challenges_reads_quoted_params_and_several_schemes() -> None:
    header = 'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"'
    (bearer,) = parse_challenges([header])
    assert bearer.scheme == "bearer"
    assert bearer.realm == "https://auth.example.com/token"
    assert bearer.service == "registry.example.com"
    assert bearer.scopes == ("repository:a/b:pull,push",)
    both = parse_challenges(['Basic realm="x \\"y\\"", Bearer realm="r",error="invalid_token"'])
    assert [c.scheme for c in both] == ["basic", "bearer"]
    assert both[0].params["realm"] == 'x "y"'
    assert both[1].params["error"] == "invalid_token"
    assert parse_challenges(["", "   ,"]) == []


@pytest.mark.parametrize(
    ("upstream", "realm", "allowed"),
    [
        ("https://registry-1.docker.io", "https://auth.docker.io/token", True),
        ("https://ghcr.io", "https://ghcr.io/token", True),
        ("https://registry.example.com", "https://auth.evil.com/token", False),
        ("https://registry.example.com", "http://auth.example.com/token", False),  # downgrade
        ("http://127.0.0.1:5000", "http://127.0.0.1:5001/token", True),  # same host, other port
        ("http://127.0.0.1:5000", "http://127.0.0.2:5000/token", False),
        ("http://localhost:5000", "http://127.0.0.1:5000/token", False),
        ("http://127.0.0.1:5000", "/token", False),
    ],
)
def test_credentials_go_only_to_realms_on_the_upstreams_host_or_domain(
    upstream: str, realm: str, allowed: bool
) -> None:
    assert may_send_credentials(URL(upstream), URL(realm)) is allowed


def test_scopes_for_paths_and_merging() -> None:
    assert scopes_for_path("GET", "/v2/a/b/manifests/latest") == ("repository:a/b:pull",)
    assert scopes_for_path("HEAD", "/v2/a/blobs/x/blobs/sha256:00") == (
        "repository:a/blobs/x:pull",
    )
    assert scopes_for_path("PATCH", "/v2/a/b/blobs/uploads/123") == ("repository:a/b:pull,push",)
    assert scopes_for_path("DELETE", "/v2/a/b/manifests/sha256:00") == ("repository:a/b:delete",)
    assert scopes_for_path("GET", "/v2/_catalog") == ("registry:catalog:*",)
    assert scopes_for_path("GET", "/v2/") == ()
    assert merge_scopes(["repository:a:pull"], ["repository:a:push", "repository:b:pull"]) == (
        "repository:a:pull,push",
        "repository:b:pull",
    )


def test_token_cache_expires_before_the_token_does_and_stays_bounded() -> None:
    now = [1000.0]
    cache = TokenCache(max_entries=3, clock=lambda: now[0])
    cache.put(("k",), "t1", 60)
    assert cache.get(("k",)) == "t1"
    now[0] += 47  # 60 s lifetime, 12 s margin
    assert cache.get(("k",)) == "t1"
    now[0] += 2
    assert cache.get(("k",)) is None
    for i in range(5):
        cache.put((str(i),), f"t{i}", 300)
    assert len(cache) == 3
    assert cache.get(("4",)) == "t4" and cache.get(("0",)) is None
    cache.invalidate(("4",), "other")
    assert cache.get(("4",)) == "t4"
    cache.invalidate(("4",), "t4")
    assert cache.get(("4",)) is None


# -- plain docker-registry -------------------------------------------------------------------


async def test_push_and_pull_roundtrip_against_docker_registry(
    docker_registry: DockerRegistry,
) -> None:
    layer = os.urandom(3 * 1024 * 1024 + 17)
    async with RegistryClient(docker_registry.url) as client:
        await client.ping()
        digest, body = await _push_image(client, REPO, "v1", layer)
        assert digest == str(Digest.of(body))

        head = await client.head_manifest(REPO, "v1", [OCI_MANIFEST])
        assert (head.digest, head.media_type, head.size) == (digest, OCI_MANIFEST, len(body))
        by_tag = await client.get_manifest(REPO, "v1", [OCI_MANIFEST])
        by_digest = await client.get_manifest(REPO, digest, [OCI_MANIFEST])
        assert by_tag.body == by_digest.body == body
        assert by_tag.digest == by_digest.digest == digest
        assert by_tag.media_type == OCI_MANIFEST

        layer_digest = str(Digest.of(layer))
        assert await client.head_blob(REPO, layer_digest) == len(layer)
        assert await client.get_blob(REPO, layer_digest) == layer
        async with client.blob_stream(REPO, layer_digest, offset=1000, end=2_000_000) as stream:
            assert stream.total_size == len(layer)  # known before the first chunk
            assert stream.length == 2_000_000 - 1000
            assert await stream.read_all() == layer[1000:2_000_000]
        async with client.blob_stream(REPO, layer_digest, offset=len(layer) - 5) as stream:
            assert await stream.read_all() == layer[-5:]

        assert await client.list_tags(REPO) == (["v1"], None)
        repos, _ = await client.catalog()
        assert REPO in repos


async def test_chunked_and_streamed_uploads_and_mount(docker_registry: DockerRegistry) -> None:
    data = os.urandom(300_000)
    async with RegistryClient(docker_registry.url) as client:
        chunked = await client.push_blob(REPO, data, chunk_size=64 * 1024)
        assert chunked == str(Digest.of(data))

        other = os.urandom(200_000)

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(other), 50_000):
                yield other[i : i + 50_000]

        streamed = await client.push_blob(REPO, pieces())
        assert streamed == str(Digest.of(other))
        assert await client.get_blob(REPO, streamed) == other

        assert await client.mount_blob("other/repo", chunked, REPO) is True
        assert await client.get_blob("other/repo", chunked) == data
    patches = docker_registry.access.wait_count("PATCH", "/blobs/uploads/", 6)
    assert patches == 6  # 5 chunks of <=64 KiB + 1 streamed PATCH


async def test_errors_are_mapped_to_oci_codes(docker_registry: DockerRegistry) -> None:
    missing = str(Digest.of(b"nothing here"))
    async with RegistryClient(docker_registry.url) as client:
        with pytest.raises(errors.BlobUnknown):
            await client.head_blob(REPO, missing)
        with pytest.raises(errors.BlobUnknown):
            await client.get_blob(REPO, missing)
        with pytest.raises(errors.ManifestUnknown):
            await client.get_manifest(REPO, "nope")
        with pytest.raises(errors.ManifestUnknown):
            await client.head_manifest(REPO, missing)
        with pytest.raises(errors.NameUnknown):
            await client.list_tags("no/such/repo")
        with pytest.raises(errors.DigestInvalid):
            await client.push_blob(REPO, b"abc", digest=str(Digest.of(b"abd")))
        with pytest.raises(errors.ManifestBlobUnknown):
            await client.push_manifest(REPO, "broken", _manifest(b"{}", []), OCI_MANIFEST)

        digest, _ = await _push_image(client, REPO, "gone", os.urandom(1000))
        await client.delete_manifest(REPO, digest)
        with pytest.raises(errors.ManifestUnknown):
            await client.get_manifest(REPO, digest)


async def test_on_request_hook_sees_every_upstream_exchange(
    docker_registry: DockerRegistry,
) -> None:
    seen: list[tuple[str, str, int]] = []
    async with RegistryClient(
        docker_registry.url, on_request=lambda m, u, s: seen.append((m, u, s))
    ) as client:
        digest = await client.push_blob(REPO, b"hello")
        await client.head_blob(REPO, digest)
        with pytest.raises(errors.BlobUnknown):
            await client.head_blob(REPO, str(Digest.of(b"x")))
    assert [(m, s) for m, _, s in seen] == [
        ("POST", 202),
        ("PUT", 201),
        ("HEAD", 200),
        ("HEAD", 404),
    ]
    assert all(
        u.startswith(docker_registry.url + "/v2/" + REPO) and "?" not in u for _, u, _ in seen
    )
    records = docker_registry.access.wait_count(None, "/v2/" + REPO, 4)
    assert records == len(seen)


# -- Bearer token auth (docker-registry behind harness.tokenserver) ---------------------------------


def _token_server(**kwargs: object) -> TokenServer:
    return TokenServer(
        users={"alice": "wonderland"},
        grants={"alice": {"team/*": ["pull", "push", "delete"]}, "": {"public/*": ["pull"]}},
        **kwargs,  # type: ignore[arg-type]
    )


async def test_token_protected_registry_pull_with_credentials(
    registry_factory: RegistryFactory,
) -> None:
    async with _token_server() as tokens:
        registry = registry_factory(auth_token=tokens.token_auth())
        layer = os.urandom(100_000)
        async with RegistryClient(registry.url, username="alice", password="wonderland") as client:
            digest, body = await _push_image(client, REPO, "v1", layer)
            fetched = await client.get_manifest(REPO, "v1")
            assert fetched.body == body and fetched.digest == digest
            assert await client.get_blob(REPO, str(Digest.of(layer))) == layer
        assert tokens.requests and all(
            r.authorization and r.user == "alice" for r in tokens.requests
        )

        async with RegistryClient(registry.url) as anonymous:
            with pytest.raises(errors.Unauthorized):
                await anonymous.get_manifest(REPO, "v1")
            with pytest.raises(errors.Unauthorized):
                await anonymous.head_blob(REPO, str(Digest.of(layer)))
        async with RegistryClient(registry.url, username="alice", password="wrong") as bad:
            with pytest.raises(errors.Unauthorized):
                await bad.get_manifest(REPO, "v1")


async def test_tokens_are_cached_per_scope_and_fetched_once_under_concurrency(
    registry_factory: RegistryFactory,
) -> None:
    async with _token_server() as tokens:
        registry = registry_factory(auth_token=tokens.token_auth())
        async with RegistryClient(registry.url, username="alice", password="wonderland") as pusher:
            digest, _ = await _push_image(pusher, REPO, "v1", os.urandom(5000))
            await _push_image(pusher, "team/other", "v1", os.urandom(5000))
        tokens.requests.clear()
        pull = "repository:team/app:pull"
        async with RegistryClient(registry.url, username="alice", password="wonderland") as client:
            await asyncio.gather(*(client.head_manifest(REPO, "v1") for _ in range(20)))
            for _ in range(10):
                await client.get_manifest(REPO, digest)
            assert tokens.count(scope=pull) == 1
            await client.get_manifest("team/other", "v1")
            assert tokens.count(scope="repository:team/other:pull") == 1
            assert len(tokens.requests) == 2
    registry.wait_quiet()
    # only the first concurrent wave met the challenge; later requests carried a cached token
    assert registry.count("HEAD", "/manifests/", status=401) == 20
    assert registry.count("GET", "/manifests/", status=401) == 0


async def test_expired_token_is_fetched_again(registry_factory: RegistryFactory) -> None:
    now = [0.0]
    async with _token_server() as tokens:
        registry = registry_factory(auth_token=tokens.token_auth())
        cache = TokenCache(clock=lambda: now[0])
        async with RegistryClient(
            registry.url, username="alice", password="wonderland", token_cache=cache
        ) as client:
            await _push_image(client, REPO, "v1", b"layer")
            tokens.requests.clear()
            await client.head_manifest(REPO, "v1")
            await client.head_manifest(REPO, "v1")
            assert len(tokens.requests) == 1
            now[0] += 300  # the server's tokens live 300 s: cached until 270 s
            await client.head_manifest(REPO, "v1")
            assert len(tokens.requests) == 2


async def test_token_service_outage_is_retried(registry_factory: RegistryFactory) -> None:
    async with _token_server() as tokens:
        registry = registry_factory(auth_token=tokens.token_auth())
        async with RegistryClient(
            registry.url, username="alice", password="wonderland", backoff=0.01
        ) as client:
            tokens.fail_next(503, times=2)
            await client.ping()
            assert [r.status for r in tokens.requests] == [503, 503, 200]
            tokens.fail_next(503, times=10)
            with pytest.raises(errors.UpstreamUnavailable):
                await client.head_manifest(REPO, "v1")


async def test_realm_on_another_host_never_receives_credentials(
    registry_factory: RegistryFactory,
) -> None:
    async with _token_server(host="127.0.0.2") as tokens:
        registry = registry_factory(auth_token=tokens.token_auth())
        async with RegistryClient(registry.url, username="alice", password="wonderland") as client:
            with pytest.raises(errors.Unauthorized):
                await client.get_manifest(REPO, "v1")
        assert tokens.requests, "the realm was asked for a token"
        assert not any(r.authorization for r in tokens.requests)


# -- Basic auth (htpasswd) -----------------------------------------------------------------------


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    subprocess.run(
        ["htpasswd", "-Bbc", str(path), "bob", "builder"], check=True, capture_output=True
    )
    return path


async def test_basic_auth_registry(registry_factory: RegistryFactory, htpasswd: Path) -> None:
    registry = registry_factory(htpasswd=htpasswd)
    registry.mark_log()  # forget the start-up probe
    async with RegistryClient(registry.url, username="bob", password="builder") as client:
        digest = await client.push_blob(REPO, b"basic bytes")
        assert await client.get_blob(REPO, digest) == b"basic bytes"
    registry.wait_quiet()
    assert registry.count(None, status=401) == 1  # the first request; Basic is sent up front after
    async with RegistryClient(registry.url, username="bob", password="nope") as client:
        with pytest.raises(errors.Unauthorized):
            await client.head_blob(REPO, digest)
