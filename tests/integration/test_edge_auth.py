"""A token-protected upstream pulled through a real edge process with configured credentials.

The upstream is docker-registry behind Bearer auth (realm: harness.tokenserver); the edge is
``quayside edge serve --config FILE`` whose YAML names the upstream with ``username`` and
``password_file`` (or ``token_file``). Shown: skopeo pulls identical bytes; the realm saw the
edge's Basic credentials and issued tokens; tokens are cached per scope (a handful of token
requests for a whole image, not one per blob); wrong credentials reach the client as an OCI
401 UNAUTHORIZED (never a 500); the password shows up in no log line and no error body.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness import skopeo
from harness.authstack import TokenProtectedRegistry, http, start_configured_edge
from harness.fixtures import ImageFactory
from harness.images import Image, KiB
from harness.registry import DockerRegistry
from harness.servers import EdgeProcess
from regcore.auth.tokens import Access

pytestmark = pytest.mark.slow

REPO, OTHER_REPO = "team/app", "team/tool"
BOT = "edge-bot"
PUSHER = "alice"
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"


class Stack:
    """The upstream with two images pushed, plus edges started on demand (all closed at the end)."""

    def __init__(self, tmp: Path, image_factory: ImageFactory) -> None:
        self.tmp = tmp
        self.bot_password = "bot-" + secrets.token_hex(12)
        self.pusher_password = "alice-" + secrets.token_hex(12)
        self.upstream = TokenProtectedRegistry(
            tmp / "upstream",
            users={BOT: self.bot_password, PUSHER: self.pusher_password},
            grants={BOT: {"team/*": ["pull"]}, PUSHER: {"team/*": ["pull", "push"]}},
        )
        self.image: Image = image_factory.image(
            layer_sizes=(160 * KiB, 40 * KiB, 24 * KiB, 8 * KiB)
        )
        self.other: Image = image_factory.image(layer_sizes=(16 * KiB,))
        self.edges: list[EdgeProcess] = []

    def start(self) -> Stack:
        self.upstream.start()
        self.upstream.push(self.image, REPO, "v1", PUSHER, self.pusher_password)
        self.upstream.push(self.other, OTHER_REPO, "v1", PUSHER, self.pusher_password)
        self.upstream.tokens.requests.clear()  # only what the edge asks from here on
        self.upstream.registry.mark_log()  # type: ignore[union-attr]
        return self

    def secret_file(self, name: str, text: str) -> Path:
        path = self.tmp / "secrets" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        path.chmod(0o600)
        return path

    def edge(self, name: str, **settings: object) -> EdgeProcess:
        edge = start_configured_edge(
            self.tmp / name, [self.upstream.upstream_entry("private", **settings)], name=name
        )
        self.edges.append(edge)
        return edge

    def close(self) -> None:
        for edge in self.edges:
            edge.close()
        self.upstream.close()


@pytest.fixture
def stack(tmp_path: Path, image_factory: ImageFactory) -> Iterator[Stack]:
    s = Stack(tmp_path, image_factory)
    try:
        yield s.start()
    finally:
        s.close()


def _assert_pulled(target: Path, image: Image) -> None:
    assert (target / "manifest.json").read_bytes() == image.manifest
    for digest, data in image.blobs().items():
        assert (target / digest.split(":", 1)[1]).read_bytes() == data


def _error_codes(body: bytes) -> list[str]:
    return [e["code"] for e in json.loads(body)["errors"]]


def _wait_logged(registry: DockerRegistry, repo: str, blob_gets: int) -> None:
    """Block (bounded) until the registry's access log holds ``blob_gets`` answered blob GETs
    of ``repo``: a line is written after its response was sent, so it can trail the client."""
    deadline = time.monotonic() + 10.0
    while (logged := registry.count("GET", f"/v2/{repo}/blobs/", status=200)) < blob_gets:
        assert time.monotonic() < deadline, f"{repo}: {logged} of {blob_gets} blob GETs logged"
        time.sleep(0.02)


def test_token_protected_upstream_pulled_through_edge_with_password_file(
    stack: Stack, tmp_path: Path
) -> None:
    edge = stack.edge(
        "edge", username=BOT, password_file=str(stack.secret_file("bot", stack.bot_password))
    )
    tokens, registry = stack.upstream.tokens, stack.upstream.registry
    assert registry is not None

    out = skopeo.pull_to_dir(edge.host, REPO, "v1", tmp_path / "pulled")
    _assert_pulled(out, stack.image)
    assert skopeo.inspect_raw(f"{edge.host}/{REPO}@{stack.image.digest}") == stack.image.manifest

    # the realm authenticated the edge with its configured Basic credentials and granted pull
    assert tokens.requests, "the edge never asked the token realm"
    for req in tokens.requests:
        assert (req.authorization, req.user, req.status) == (True, BOT, 200), req
        assert req.granted == (f"repository:{REPO}:pull",), req
    # tokens are cached per scope: every blob and manifest of the image went upstream with
    # Bearer auth, but the realm was asked at most twice (concurrent first requests)
    blobs = stack.image.blobs()
    _wait_logged(registry, REPO, len(blobs))
    registry.wait_quiet()
    for digest in blobs:
        assert registry.count("GET", f"/blobs/{digest}", status=200) == 1
    assert len(tokens.requests) <= 2 < len(blobs)

    # another repository: another scope, one more token; the first repo's token is reused
    before = len(tokens.requests)
    status = http(f"{edge.url}/v2/{OTHER_REPO}/manifests/v1", headers={"Accept": MANIFEST_ACCEPT})
    assert status.status == 200 and status.body == stack.other.manifest
    for digest, data in stack.other.blobs().items():
        assert http(f"{edge.url}/v2/{OTHER_REPO}/blobs/{digest}").body == data
    new = tokens.requests[before:]
    assert [r.scopes for r in new] == [(f"repository:{OTHER_REPO}:pull",)]

    # a second pull is served by the edge's cache: no token and no blob request upstream.
    # The registry writes its access-log line after the response bytes went out, so the
    # lines of the blob GETs just above may land a few ms after the client got its bytes:
    # wait for them before marking, or one of them is counted as the second pull's.
    _wait_logged(registry, OTHER_REPO, len(stack.other.blobs()))
    registry.wait_quiet()
    registry.mark_log()
    before = len(tokens.requests)
    _assert_pulled(skopeo.pull_to_dir(edge.host, REPO, "v1", tmp_path / "again"), stack.image)
    registry.wait_quiet()
    assert registry.count("GET", "/blobs/") == 0
    assert len(tokens.requests) == before

    assert stack.bot_password not in edge.log_text()


def test_ready_bearer_token_from_token_file_needs_no_realm(stack: Stack) -> None:
    issued = stack.upstream.tokens.issuer.issue(BOT, [Access("repository", REPO, ("pull",))])
    edge = stack.edge("edge", token_file=str(stack.secret_file("token", issued.token)))
    got = http(f"{edge.url}/v2/{REPO}/manifests/v1", headers={"Accept": MANIFEST_ACCEPT})
    assert got.status == 200 and got.body == stack.image.manifest
    for digest, data in stack.image.blobs().items():
        assert http(f"{edge.url}/v2/{REPO}/blobs/{digest}").body == data
    assert stack.upstream.tokens.requests == []  # the configured token was used as is
    # the token grants team/app only: another repository is refused as an OCI error
    refused = http(f"{edge.url}/v2/{OTHER_REPO}/manifests/v1", headers={"Accept": MANIFEST_ACCEPT})
    assert refused.status == 401 and _error_codes(refused.body) == ["UNAUTHORIZED"]
    assert issued.token not in edge.log_text()
    assert issued.token.encode() not in refused.body


def test_wrong_configured_credentials_give_oci_401_not_500_and_leak_nothing(
    stack: Stack,
) -> None:
    wrong = "wrong-" + secrets.token_hex(12)
    edge = stack.edge("edge", username=BOT, password_file=str(stack.secret_file("bot", wrong)))
    layer = stack.image.layers[0]
    replies = [
        http(f"{edge.url}/v2/{REPO}/manifests/v1", headers={"Accept": MANIFEST_ACCEPT}),
        http(f"{edge.url}/v2/{REPO}/manifests/{stack.image.digest}"),
        http(f"{edge.url}/v2/{REPO}/blobs/{layer.digest}"),
        http(f"{edge.url}/v2/{REPO}/tags/list"),
    ]
    for reply in replies:
        assert reply.status == 401, reply
        assert reply.headers.get("Content-Type", "").startswith("application/json")
        assert _error_codes(reply.body) == ["UNAUTHORIZED"]
        assert wrong.encode() not in reply.body and stack.bot_password.encode() not in reply.body
    head = http(f"{edge.url}/v2/{REPO}/blobs/{layer.digest}", method="HEAD")
    assert head.status == 401 and head.body == b""

    # the realm saw the edge's (wrong) Basic credentials and refused them; nothing was issued
    tokens = stack.upstream.tokens.requests
    assert tokens and all(r.authorization and r.user == BOT and r.status == 401 for r in tokens)
    assert len(tokens) <= 2 * (len(replies) + 1)  # no retry storm against the realm
    # nothing was cached: the blob is still unknown to the edge's cache
    assert edge.metric("quayside_edge_cache_hits", kind="blob") == 0
    log = edge.log_text()
    assert wrong not in log and stack.bot_password not in log


def test_cold_concurrent_pulls_fetch_one_token(stack: Stack) -> None:
    """20+ clients hit a cold edge at once, each for another blob: one token request."""
    edge = stack.edge(
        "edge", username=BOT, password_file=str(stack.secret_file("bot", stack.bot_password))
    )
    blobs = stack.image.blobs()
    with ThreadPoolExecutor(len(blobs) * 4) as pool:
        urls = [f"{edge.url}/v2/{REPO}/blobs/{d}" for d in blobs for _ in range(4)]
        replies = list(pool.map(http, urls))
    assert [r.body for r in replies] == [blobs[u.rsplit("/", 1)[1]] for u in urls]
    assert [r.scopes for r in stack.upstream.tokens.requests] == [(f"repository:{REPO}:pull",)]


def test_token_realm_failures_retried_then_429_passed_on(stack: Stack) -> None:
    edge = stack.edge(
        "edge",
        username=BOT,
        password_file=str(stack.secret_file("bot", stack.bot_password)),
        retries=2,
    )
    tokens = stack.upstream.tokens
    tokens.fail_next(503, times=2)  # a realm hiccup: retried with backoff
    got = http(f"{edge.url}/v2/{REPO}/manifests/v1", headers={"Accept": MANIFEST_ACCEPT})
    assert got.status == 200 and got.body == stack.image.manifest
    assert [r.status for r in tokens.requests] == [503, 503, 200]
    tokens.fail_next(429, times=20)  # a realm that keeps refusing: 429 reaches the client
    refused = http(f"{edge.url}/v2/{OTHER_REPO}/manifests/v1", headers={"Accept": MANIFEST_ACCEPT})
    assert refused.status == 429 and _error_codes(refused.body) == ["TOOMANYREQUESTS"]
    assert [r.status for r in tokens.requests[3:]] == [429] * 3  # the retry budget, no storm


def test_credentials_never_sent_to_a_realm_on_another_host(
    tmp_path: Path, image_factory: ImageFactory
) -> None:
    """The registry (127.0.0.1) names a realm on 127.0.0.2: the edge asks it for a token
    without the configured credentials (anonymous gets no grant here, so the client sees an
    OCI 401), and the password reaches neither the realm nor any log."""
    password = "bot-" + secrets.token_hex(12)
    upstream = TokenProtectedRegistry(
        tmp_path / "upstream",
        users={BOT: password, PUSHER: "alice-pw"},
        grants={BOT: {"team/*": ["pull"]}, PUSHER: {"team/*": ["pull", "push"]}},
        realm_host="127.0.0.2",
    )
    image = image_factory.image(layer_sizes=(8 * KiB,))
    with upstream:
        upstream.push(image, REPO, "v1", PUSHER)  # with a directly issued token
        secret = tmp_path / "bot.secret"
        secret.write_text(password)
        edge = start_configured_edge(
            tmp_path / "edge",
            [upstream.upstream_entry("up", username=BOT, password_file=str(secret))],
        )
        try:
            got = http(f"{edge.url}/v2/{REPO}/manifests/v1", headers={"Accept": MANIFEST_ACCEPT})
            assert got.status == 401 and _error_codes(got.body) == ["UNAUTHORIZED"]
            requests = upstream.tokens.requests
            assert requests and all(not r.authorization and r.user is None for r in requests)
            assert all(k != "account" for r in requests for k, _ in r.query)
            assert password not in edge.log_text()
        finally:
            edge.close()
