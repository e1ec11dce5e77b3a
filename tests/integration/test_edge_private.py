"""Private content (PROTOCOL.md 13): a cached blob of a ``private: true`` upstream is served only
to clients the upstream itself would let pull it -- through a real ``quayside edge serve
--config`` process.

Upstream: docker-registry behind Bearer auth, its realm granting alice pull on ``team/*`` and
bob pull on ``bob/*`` only. Either the edge has no credentials of its own (alice's
``Authorization`` is used for her pull and for the access check) or it has a robot account
(used for fetching; the client's credentials only for the check). Once the blob is in the
edge's cache, bob (valid credentials, no grant), bob asking for the same digest under a
repository he may pull, a wrong password, an anonymous client and the peer endpoint still
give an OCI error and never a byte; alice (Basic, or a Bearer token of the upstream's realm)
is served from the cache without a second download.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.authstack import Reply, TokenProtectedRegistry, http, start_configured_edge
from harness.fixtures import ImageFactory
from harness.images import Image, KiB
from regcore.auth.tokens import Access

pytestmark = pytest.mark.slow

REPO = "team/app"
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"
REFUSED = {401: "UNAUTHORIZED", 403: "DENIED", 404: "BLOB_UNKNOWN"}


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@dataclass
class Private:
    upstream: TokenProtectedRegistry
    image: Image
    bobs_image: Image
    passwords: dict[str, str]

    def auth(self, user: str) -> dict[str, str]:
        return _basic(user, self.passwords[user])


@pytest.fixture
def private(tmp_path: Path, image_factory: ImageFactory) -> Iterator[Private]:
    passwords = {u: f"{u}-{secrets.token_hex(8)}" for u in ("alice", "bob", "ci")}
    upstream = TokenProtectedRegistry(
        tmp_path / "upstream",
        users=passwords,
        grants={
            "alice": {"team/*": ["pull"]},
            "bob": {"bob/*": ["pull"]},
            "ci": {"team/*": ["pull", "push"], "bob/*": ["pull", "push"]},
        },
    )
    image = image_factory.image(layer_sizes=(96 * KiB, 8 * KiB))
    bobs_image = image_factory.image(layer_sizes=(8 * KiB,))
    with upstream:
        yield Private(upstream, image, bobs_image, passwords)


async def _push(p: Private) -> None:
    """alice's image to team/app; bob's own repository bob/mine gets another image, so it exists
    upstream (and bob may pull it) but does not hold alice's blobs."""
    ci = p.passwords["ci"]
    await p.upstream.push_async(p.image, REPO, "v1", "ci", ci)
    await p.upstream.push_async(p.bobs_image, "bob/mine", "v1", "ci", ci)
    p.upstream.tokens.requests.clear()


def _assert_refused(reply: Reply, secret: bytes) -> None:
    assert reply.status in REFUSED, reply
    assert json.loads(reply.body)["errors"][0]["code"] in REFUSED.values()
    assert secret not in reply.body


def _scenario(p: Private, base: str, robot: str | None) -> None:
    """The whole PROTOCOL.md 13 story against the edge at ``base`` (synchronous HTTP);
    ``robot`` is the user the edge fetches as (``None``: the client's own credentials)."""
    registry, tokens = p.upstream.registry, p.upstream.tokens
    assert registry is not None
    big = p.image.layers[0]
    blob_url = f"{base}/v2/{REPO}/blobs/{big.digest}"

    # no credentials: a Basic challenge from the edge (on the ping too, so dockerd sends
    # credentials on what follows), no bytes
    ping = http(f"{base}/v2/")
    assert ping.status == 401 and ping.headers["WWW-Authenticate"].startswith("Basic ")
    anon = http(blob_url)
    _assert_refused(anon, big.data)
    assert anon.status == 401 and anon.headers["WWW-Authenticate"].startswith("Basic ")

    # alice pulls: her credentials reach the upstream's realm, the blobs are cached
    manifest = http(
        f"{base}/v2/{REPO}/manifests/v1", headers={**p.auth("alice"), "Accept": MANIFEST_ACCEPT}
    )
    assert manifest.status == 200 and manifest.body == p.image.manifest
    for digest, data in p.image.blobs().items():
        got = http(f"{base}/v2/{REPO}/blobs/{digest}", headers=p.auth("alice"))
        assert got.status == 200 and got.body == data
    assert "alice" in {r.user for r in tokens.requests}  # her credentials, for the check
    assert {r.user for r in tokens.requests} <= {"alice", robot}
    registry.wait_quiet()
    assert registry.count("GET", f"/blobs/{big.digest}", status=200) == 1

    # the blob is cached now; still nobody the upstream would refuse gets it
    registry.mark_log()
    before = len(tokens.requests)
    _assert_refused(http(blob_url, headers=p.auth("bob")), big.data)
    assert any(r.user == "bob" and r.granted == () for r in tokens.requests[before:]), (
        "the edge did not ask the upstream on bob's behalf"
    )
    # same digest under a repository bob may pull, where the upstream does not have it
    assert http(f"{base}/v2/bob/mine/manifests/v1", headers=p.auth("bob")).status == 200
    _assert_refused(http(f"{base}/v2/bob/mine/blobs/{big.digest}", headers=p.auth("bob")), big.data)
    for ref in (p.image.digest, "v1"):  # the manifest, cached by digest and by tag
        _assert_refused(
            http(f"{base}/v2/{REPO}/manifests/{ref}", headers=p.auth("bob")), p.image.manifest
        )
    _assert_refused(http(f"{base}/v2/{REPO}/tags/list", headers=p.auth("bob")), b'"v1"')
    _assert_refused(http(blob_url, headers=_basic("alice", "not-her-password")), big.data)
    anon_head = http(blob_url, method="HEAD")
    assert anon_head.status == 401 and anon_head.body == b""
    _assert_refused(http(blob_url), big.data)
    # the region's peer endpoint is no side door (no region here: it refuses everyone)
    for headers in ({}, p.auth("bob")):
        peer = http(f"{base}/_quayside/peer/blobs/{big.digest}", headers=headers)
        assert peer.status in (401, 403, 404) and big.data not in peer.body, peer.status
    registry.wait_quiet()
    assert registry.count("GET", "/blobs/", status=200) == 0  # no bytes went anywhere

    # alice again, by Basic and by a Bearer token of the upstream's realm: from the cache
    issued = tokens.issuer.issue("alice", [Access("repository", REPO, ("pull",))])
    for headers in (p.auth("alice"), {"Authorization": f"Bearer {issued.token}"}):
        got = http(blob_url, headers=headers)
        assert got.status == 200 and got.body == big.data
    registry.wait_quiet()
    assert registry.count("GET", "/blobs/", status=200) == 0


@pytest.mark.parametrize("robot", [None, "ci"], ids=["client-credentials", "robot-account"])
def test_private_upstream_cached_blob_not_served_to_clients_the_upstream_refuses(
    private: Private, tmp_path: Path, robot: str | None
) -> None:
    asyncio.run(_push(private))
    settings: dict[str, Any] = {"private": True}
    if robot is not None:
        secret = tmp_path / "robot.secret"
        secret.write_text(private.passwords[robot])
        settings.update(username=robot, password_file=str(secret))
    edge = start_configured_edge(
        tmp_path / "edge", [private.upstream.upstream_entry("private", **settings)]
    )
    try:
        _scenario(private, edge.url, robot)
        log = edge.log_text()
        for password in private.passwords.values():
            assert password not in log
    finally:
        edge.close()
