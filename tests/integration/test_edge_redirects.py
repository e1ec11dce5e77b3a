"""Blob redirects to another host, followed by a real edge process without credentials.

Two upstreams, both behind Bearer auth with a harness.tokenserver realm, the edge configured
with ``username`` + ``password_file`` in its YAML:

- docker-registry with distribution's ``redirect`` storage middleware: blob GET/HEAD answer
  307 to a "CDN" on 127.0.0.2 that serves the registry's storage (what S3/GCS back ends do);
- an in-test registry (harness.faultserver) that redirects every blob GET to a fresh signed
  URL on 127.0.0.2, which redirects once more to a storage host on 127.0.0.3; both answer
  like S3 does (400 "only one auth mechanism allowed") if an ``Authorization`` arrives.

Shown: the client gets the right bytes; the upstream saw the edge's Bearer token; no
redirect target saw ``Authorization``; blobs are cached by digest (a second GET, even under
another repository name and after a new signed URL would be issued, touches no server);
HEAD on an uncached blob follows the redirect too and downloads nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from harness.authstack import TokenProtectedRegistry, http, start_configured_edge
from harness.faultserver import FaultServer
from harness.fixtures import ImageFactory
from harness.images import Image, KiB, sha256_digest
from harness.servers import EdgeProcess
from harness.tokenserver import TokenServer
from regcore import errors
from regcore.auth.tokens import allows

pytestmark = pytest.mark.slow

REPO = "team/app"
BOT = "edge-bot"
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def _password_file(tmp: Path, password: str) -> str:
    path = tmp / "secrets" / "bot"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(password + "\n")
    return str(path)


# -- docker-registry with the redirect middleware ----------------------------------------------


@pytest.fixture
def redirecting_registry(tmp_path: Path) -> Iterator[TokenProtectedRegistry]:
    upstream = TokenProtectedRegistry(
        tmp_path / "upstream",
        users={BOT: "bot-" + secrets.token_hex(8), "alice": "alice-pw"},
        grants={BOT: {"team/*": ["pull"]}, "alice": {"team/*": ["pull", "push"]}},
        cdn_host="127.0.0.2",
    )
    with upstream:
        yield upstream


def test_docker_registry_redirect_to_cdn_host_gets_no_authorization(
    redirecting_registry: TokenProtectedRegistry, image_factory: ImageFactory, tmp_path: Path
) -> None:
    up = redirecting_registry
    registry, cdn, tokens = up.registry, up.cdn, up.tokens
    assert registry is not None and cdn is not None
    image = image_factory.image(layer_sizes=(200 * KiB, 30 * KiB))
    up.push(image, REPO, "v1", "alice", "alice-pw")
    cdn.requests.clear()
    tokens.requests.clear()
    registry.mark_log()
    edge = start_configured_edge(
        tmp_path / "edge",
        [
            up.upstream_entry(
                "up", username=BOT, password_file=_password_file(tmp_path, tokens.users[BOT])
            )
        ],
    )
    try:
        head_only = image.layers[0]
        blobs = {d: b for d, b in image.blobs().items() if d != head_only.digest}

        # HEAD of an uncached blob: the upstream's 307 is followed with HEAD, nothing downloaded
        head = http(f"{edge.url}/v2/{REPO}/blobs/{head_only.digest}", method="HEAD")
        assert head.status == 200, head
        assert int(head.headers["Content-Length"]) == head_only.size
        assert head.headers["Docker-Content-Digest"] == head_only.digest

        for digest, data in blobs.items():
            got = http(f"{edge.url}/v2/{REPO}/blobs/{digest}")
            assert got.status == 200 and got.body == data

        registry.wait_quiet()
        for digest in blobs:  # the registry accepted the edge's token (else 401) and redirected
            assert registry.count("GET", f"/blobs/{digest}", status=307) == 1
            assert cdn.count("GET", digest.split(":", 1)[1]) == 1
        assert registry.count("HEAD", f"/blobs/{head_only.digest}", status=307) == 1
        assert cdn.count("GET", head_only.digest.split(":", 1)[1]) == 0
        assert cdn.count("HEAD") == 1
        # the CDN host never saw credentials of any kind
        assert cdn.requests and cdn.with_header("Authorization") == []
        assert tokens.requests and all(r.user == BOT and r.status == 200 for r in tokens.requests)

        # cached by digest: a second GET goes nowhere
        registry.mark_log()
        seen = len(cdn.requests)
        for digest, data in blobs.items():
            assert http(f"{edge.url}/v2/{REPO}/blobs/{digest}").body == data
        registry.wait_quiet()
        assert registry.count(None, "/blobs/") == 0
        assert len(cdn.requests) == seen
    finally:
        edge.close()


# -- an in-test registry with signed, two-hop redirects -------------------------------------


@dataclass
class SigningRegistry:
    """Upstream registry (127.0.0.1) -> signed URL on a CDN (127.0.0.2) -> storage (127.0.0.3)."""

    tokens: TokenServer
    image: Image
    registry: FaultServer = field(default_factory=lambda: FaultServer(name="registry"))
    cdn: FaultServer = field(default_factory=lambda: FaultServer(host="127.0.0.2", name="cdn"))
    storage: FaultServer = field(
        default_factory=lambda: FaultServer(host="127.0.0.3", name="storage")
    )
    signatures: set[str] = field(default_factory=set)
    expired: bool = False  # the CDN refuses every signature (403), as for an expired URL
    cut_once: set[str] = field(default_factory=set)  # digests whose next full GET is cut short
    head_refused: bool = False  # signed for GET only: the CDN answers HEAD with 403, like S3
    claims: list[dict[str, object]] = field(default_factory=list)
    _n: itertools.count[int] = field(default_factory=itertools.count)

    def start(self) -> SigningRegistry:
        self.storage.route("*", "/bytes/{digest}", self._storage).start()
        self.cdn.route("*", "/signed/{digest}", self._cdn).start()
        self.registry.route("GET", "/v2/", self._base)
        self.registry.route("*", "/v2/{name:.+}/manifests/{ref}", self._manifest)
        self.registry.route("*", "/v2/{name:.+}/blobs/{digest}", self._blob)
        self.registry.start()
        return self

    def close(self) -> None:
        for server in (self.registry, self.cdn, self.storage):
            server.close()

    def _challenge(self, name: str | None) -> web.Response:
        scope = f',scope="repository:{name}:pull"' if name else ""
        header = f'Bearer realm="{self.tokens.realm}",service="{self.tokens.issuer.service}"{scope}'
        body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        return web.json_response(body, status=401, headers={"WWW-Authenticate": header})

    def _authorized(self, request: web.Request, name: str) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        try:
            claims = self.tokens.issuer.verify(header[len("Bearer ") :])
        except errors.Unauthorized:
            return False
        self.claims.append(claims)
        return allows(claims, "repository", name, "pull")

    async def _base(self, request: web.Request) -> web.Response:
        return self._challenge(None)

    async def _manifest(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not self._authorized(request, name):
            return self._challenge(name)
        if name != REPO or request.match_info["ref"] not in ("v1", self.image.digest):
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        headers = {
            "Docker-Content-Digest": self.image.digest,
            "Content-Type": self.image.media_type,
        }
        body = b"" if request.method == "HEAD" else self.image.manifest
        resp = web.Response(body=body, headers=headers)
        if request.method == "HEAD":
            resp.content_length = len(self.image.manifest)
        return resp

    async def _blob(self, request: web.Request) -> web.Response:
        name, digest = request.match_info["name"], request.match_info["digest"]
        if not self._authorized(request, name):
            return self._challenge(name)
        if name != REPO or digest not in self.image.blobs():
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        signature = f"sig{next(self._n)}-{secrets.token_hex(8)}"  # a fresh URL every time
        self.signatures.add(signature)
        location = f"{self.cdn.url}/signed/{digest}?X-Amz-Expires=300&X-Amz-Signature={signature}"
        return web.Response(status=307, headers={"Location": location})

    @staticmethod
    def _refuse_credentials(request: web.Request) -> web.Response | None:
        if "Authorization" in request.headers:  # what S3 says to a second auth mechanism
            return web.Response(
                status=400,
                text="<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism "
                "allowed</Message></Error>",
            )
        return None

    async def _cdn(self, request: web.Request) -> web.Response:
        refused = self._refuse_credentials(request)
        if refused is not None:
            return refused
        if self.expired or request.query.get("X-Amz-Signature") not in self.signatures:
            return web.Response(status=403, text="<Error><Code>AccessDenied</Code></Error>")
        if self.head_refused and request.method == "HEAD":
            return web.Response(status=403)
        digest = request.match_info["digest"]
        return web.Response(status=302, headers={"Location": f"{self.storage.url}/bytes/{digest}"})

    async def _storage(self, request: web.Request) -> web.StreamResponse:
        refused = self._refuse_credentials(request)
        if refused is not None:
            return refused
        data = self.image.blobs().get(request.match_info["digest"])
        if data is None:
            return web.Response(status=404)
        if request.method == "HEAD":
            resp = web.Response(headers={"Content-Type": "application/octet-stream"})
            resp.content_length = len(data)
            return resp
        spec = request.headers.get("Range", "")
        if spec.startswith("bytes="):
            first, _, last = spec.removeprefix("bytes=").partition("-")
            start, stop = int(first), (int(last) + 1 if last else len(data))
            return web.Response(
                status=206,
                body=data[start:stop],
                headers={
                    "Content-Range": f"bytes {start}-{stop - 1}/{len(data)}",
                    "Content-Type": "application/octet-stream",
                },
            )
        digest = request.match_info["digest"]
        if digest in self.cut_once:  # announce everything, send a third, drop the connection
            self.cut_once.discard(digest)
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            resp.content_length = len(data)
            await resp.prepare(request)
            await resp.write(data[: len(data) // 3])
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.close()
            return resp
        return web.Response(body=data, content_type="application/octet-stream")


@pytest.fixture
def signing_registry(image_factory: ImageFactory) -> Iterator[SigningRegistry]:
    tokens = TokenServer(
        users={BOT: "bot-" + secrets.token_hex(8)}, grants={BOT: {"team/*": ["pull"]}}
    ).start_in_thread()
    upstream = SigningRegistry(tokens, image_factory.image(layer_sizes=(300 * KiB, 12 * KiB)))
    try:
        yield upstream.start()
    finally:
        upstream.close()
        tokens.stop_thread()


def _entry(up: SigningRegistry, password_file: str, **settings: object) -> dict[str, object]:
    return {
        "name": "up",
        "url": up.registry.url,
        "username": BOT,
        "password_file": password_file,
        **settings,
    }


@pytest.fixture
def edge_for(tmp_path: Path) -> Iterator[list[EdgeProcess]]:
    started: list[EdgeProcess] = []
    try:
        yield started
    finally:
        for edge in started:
            edge.close()


def test_signed_two_hop_redirect_followed_without_credentials_and_cached_by_digest(
    signing_registry: SigningRegistry, edge_for: list[EdgeProcess], tmp_path: Path
) -> None:
    up = signing_registry
    password = up.tokens.users[BOT]
    edge = start_configured_edge(
        tmp_path / "edge",
        [_entry(up, _password_file(tmp_path, password))],
    )
    edge_for.append(edge)

    manifest = http(f"{edge.url}/v2/{REPO}/manifests/v1", headers={"Accept": MANIFEST_ACCEPT})
    assert manifest.status == 200 and manifest.body == up.image.manifest
    for digest, data in up.image.blobs().items():
        got = http(f"{edge.url}/v2/{REPO}/blobs/{digest}")
        assert got.status == 200, got
        assert got.body == data and sha256_digest(got.body) == digest
        assert got.headers["Docker-Content-Digest"] == digest

    blobs = up.image.blobs()
    # the upstream got the edge's Bearer token (issued to the configured user) on blob GETs
    blob_gets = [r for r in up.registry.requests if r.method == "GET" and "/blobs/" in r.path]
    authorized = [r for r in blob_gets if (r.header("Authorization") or "").startswith("Bearer ")]
    assert {r.path.rsplit("/", 1)[1] for r in authorized} == set(blobs)
    assert up.claims and all(c["sub"] == BOT for c in up.claims)
    assert all(r.user == BOT and r.authorization for r in up.tokens.requests)
    # ... and both redirect hops were followed, but neither host saw any credentials
    for digest in blobs:
        assert up.cdn.count("GET", f"/signed/{digest}") == 1
        assert up.storage.count("GET", f"/bytes/{digest}") == 1
    assert up.cdn.with_header("Authorization") == []
    assert up.storage.with_header("Authorization") == []
    assert all(r.header("Cookie") is None for r in up.cdn.requests + up.storage.requests)

    # cached by digest, not by (signed) URL: same repo or another name, no server is asked
    seen = [len(s.requests) for s in (up.registry, up.cdn, up.storage)]
    tokens_seen = len(up.tokens.requests)
    for repo in (REPO, "team/elsewhere"):
        for digest, data in blobs.items():
            got = http(f"{edge.url}/v2/{repo}/blobs/{digest}")
            assert got.status == 200 and got.body == data
    assert [len(s.requests) for s in (up.registry, up.cdn, up.storage)] == seen
    assert len(up.tokens.requests) == tokens_seen
    assert edge.metric("quayside_edge_cache_hits", kind="blob") == 2 * len(blobs)
    assert password not in edge.log_text()


def test_redirect_target_refusing_gives_oci_error_not_bytes(
    signing_registry: SigningRegistry, edge_for: list[EdgeProcess], tmp_path: Path
) -> None:
    """A signed URL the CDN refuses (403) is an upstream failure for the client, and nothing
    is cached: the next GET goes upstream again (with a fresh signature) and succeeds."""
    up = signing_registry
    edge = start_configured_edge(
        tmp_path / "edge",
        [_entry(up, _password_file(tmp_path, up.tokens.users[BOT]), retries=0)],
    )
    edge_for.append(edge)
    layer = up.image.layers[0]
    up.expired = True
    refused = http(f"{edge.url}/v2/{REPO}/blobs/{layer.digest}")
    assert refused.status in (403, 502), refused
    codes = [e["code"] for e in json.loads(refused.body)["errors"]]
    assert codes and codes[0] in ("DENIED", "UNAVAILABLE"), codes
    assert layer.data not in refused.body
    up.expired = False
    got = http(f"{edge.url}/v2/{REPO}/blobs/{layer.digest}")
    assert got.status == 200 and got.body == layer.data
    assert up.cdn.with_header("Authorization") == []


def test_stream_cut_behind_redirect_resumes_with_range_still_without_credentials(
    signing_registry: SigningRegistry, edge_for: list[EdgeProcess], tmp_path: Path
) -> None:
    """The storage host drops the connection a third into the blob: the edge resumes with
    ``Range`` (through the registry again or the redirect target), the client gets exactly
    the blob, it is cached, and no hop but the registry ever saw credentials."""
    up = signing_registry
    edge = start_configured_edge(
        tmp_path / "edge", [_entry(up, _password_file(tmp_path, up.tokens.users[BOT]))]
    )
    edge_for.append(edge)
    layer = up.image.layers[0]
    up.cut_once.add(layer.digest)
    got = http(f"{edge.url}/v2/{REPO}/blobs/{layer.digest}")
    assert got.status == 200 and got.body == layer.data
    storage_gets = [r for r in up.storage.requests if r.path == f"/bytes/{layer.digest}"]
    assert len(storage_gets) == 2, storage_gets
    assert storage_gets[0].header("Range") is None
    resumed_at = (storage_gets[1].header("Range") or "").removeprefix("bytes=").rstrip("-")
    assert 0 < int(resumed_at) <= len(layer.data) // 3  # resumed, not started over
    assert (
        up.cdn.with_header("Authorization") == [] and up.storage.with_header("Authorization") == []
    )
    # committed: the next client is served from the cache
    seen = len(up.storage.requests)
    assert http(f"{edge.url}/v2/{REPO}/blobs/{layer.digest}").body == layer.data
    assert len(up.storage.requests) == seen


def test_head_of_uncached_blob_when_signed_url_refuses_head(
    signing_registry: SigningRegistry, edge_for: list[EdgeProcess], tmp_path: Path
) -> None:
    """A URL signed for GET refuses HEAD (403): the edge learns the size from a one-byte
    ranged GET instead -- 200 with Content-Length for the client, no download, no credentials
    past the registry."""
    up = signing_registry
    up.head_refused = True
    edge = start_configured_edge(
        tmp_path / "edge", [_entry(up, _password_file(tmp_path, up.tokens.users[BOT]))]
    )
    edge_for.append(edge)
    layer = up.image.layers[0]
    head = http(f"{edge.url}/v2/{REPO}/blobs/{layer.digest}", method="HEAD")
    assert head.status == 200, head
    assert int(head.headers["Content-Length"]) == len(layer.data)
    assert head.headers["Docker-Content-Digest"] == layer.digest
    fetched = [r for r in up.storage.requests if r.method == "GET"]
    assert [r.header("Range") for r in fetched] == ["bytes=0-0"]  # one byte, not the blob
    assert (
        up.cdn.with_header("Authorization") == [] and up.storage.with_header("Authorization") == []
    )
