"""An edge in front of a token-protected Quayside origin (real processes, real skopeo).

The origin runs ``auth.token`` with its own token service (htpasswd users, roles per
repository); the edge's only upstream is that origin in ``auth.mode: token``, with no
credentials of its own. Shown: skopeo pulls through the edge with the origin's users
(``--src-creds`` and ``skopeo login <edge>``) and gets identical bytes; an anonymous caller
gets the origin's own Bearer challenge (realm = the origin's token service), also for a blob
the edge has cached and for the edge's ``/v2/``; a token for repository A does not open
repository B (neither B's cached blobs nor A's blobs asked for through B); a token signed by
a foreign key, an expired one and one for another audience are refused; invented key ids
cost at most one JWKS fetch per interval; no password or token reaches the edge's log.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import skopeo
from harness.authclients import skopeo as skopeo_auth
from harness.authclients import skopeo_login
from harness.edgeorigin import ISSUER, SERVICE, EdgeOriginStack, request
from harness.images import KiB, make_image
from regcore.auth.tokens import Access, TokenIssuer

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover
    pytest.skip("skopeo is not installed", allow_module_level=True)

USERS = {"dev": "Dev-" + secrets.token_hex(8), "viewer": "View-" + secrets.token_hex(8)}
RULES = [
    {"repository": "team/app", "users": {"dev": "developer", "viewer": "viewer"}},
    {"repository": "team/*", "users": {"dev": "developer"}},
]
APP, OTHER = "team/app", "team/other"
ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


class Stack(EdgeOriginStack):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, users=USERS, rules=RULES)
        self.app = make_image(layer_sizes=(96 * KiB, 12 * KiB), seed=301)
        self.other = make_image(layer_sizes=(20 * KiB,), seed=401)

    def start(self) -> Stack:
        super().start()
        self.push(self.app, APP, "v1", "dev")
        self.push(self.other, OTHER, "v1", "dev")
        return self


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("edge-origin-auth"))
    try:
        yield s.start()
    finally:
        s.close()
    assert s.edge is not None
    assert s.edge.server_errors() == []


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _challenge(value: str) -> dict[str, str]:
    assert value.startswith("Bearer "), value
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


def _layer(image: object) -> str:
    return str(image.layers[0].digest)  # type: ignore[attr-defined]


def test_skopeo_pulls_through_the_edge_with_the_origins_users(stack: Stack, tmp_path: Path) -> None:
    assert stack.edge is not None
    host = stack.edge.host
    out = tmp_path / "pulled"
    skopeo.copy(f"docker://{host}/{APP}:v1", f"dir:{out}", src_creds=f"viewer:{USERS['viewer']}")
    assert (out / "manifest.json").read_bytes() == stack.app.manifest
    for digest, data in stack.app.blobs().items():
        assert (out / digest.split(":", 1)[1]).read_bytes() == data
    # `skopeo login <edge>`: the edge's /v2/ sends it to the origin's realm, like the origin
    authfile = tmp_path / "auth.json"
    skopeo_login(host, "viewer", USERS["viewer"], authfile)
    raw = skopeo_auth(["inspect", "--raw", f"docker://{host}/{APP}:v1"], authfile)
    assert raw == stack.app.manifest
    # the viewer has no rule for team/other: refused through the edge as at the origin
    with pytest.raises(skopeo.SkopeoError):
        skopeo_auth(["inspect", "--raw", f"docker://{host}/{OTHER}:v1"], authfile)


def test_anonymous_callers_get_the_origins_challenge_even_for_cached_blobs(stack: Stack) -> None:
    assert stack.edge is not None
    edge = stack.edge.url
    token = stack.token("viewer", f"repository:{APP}:pull")
    layer = _layer(stack.app)
    warm = request(f"{edge}/v2/{APP}/blobs/{layer}", headers=_bearer(token))
    assert warm.status == 200 and warm.body == stack.app.blobs()[layer]

    for path in (f"/v2/{APP}/blobs/{layer}", f"/v2/{APP}/manifests/v1"):
        for method in ("GET", "HEAD"):
            reply = request(edge + path, method=method, headers=ACCEPT)
            assert reply.status == 401, (method, path)
            ch = _challenge(reply.headers["WWW-Authenticate"])
            assert ch == {
                "realm": stack.realm,
                "service": SERVICE,
                "scope": f"repository:{APP}:pull",
            }
            if method == "GET":
                assert reply.codes() == ["UNAUTHORIZED"]
                assert stack.app.blobs()[layer] not in reply.body
    # the edge's /v2/: the origin's challenge without a scope; a valid token passes
    base = request(f"{edge}/v2/")
    assert base.status == 401
    assert _challenge(base.headers["WWW-Authenticate"]) == {
        "realm": stack.realm,
        "service": SERVICE,
    }
    assert request(f"{edge}/v2/", headers=_bearer(token)).status == 200
    anonymous = stack.token(None)  # a token without a user is no sign-in, there as here
    assert request(f"{stack.origin.url}/v2/", headers=_bearer(anonymous)).status == 401
    assert request(f"{edge}/v2/", headers=_bearer(anonymous)).status == 401
    origin_base = request(f"{stack.origin.url}/v2/")
    assert origin_base.headers["WWW-Authenticate"] == base.headers["WWW-Authenticate"]


def test_a_token_for_one_repository_opens_no_other(stack: Stack) -> None:
    assert stack.edge is not None
    edge = stack.edge.url
    app_token = stack.token("dev", f"repository:{APP}:pull")
    other_token = stack.token("dev", f"repository:{OTHER}:pull")
    other_layer, app_layer = _layer(stack.other), _layer(stack.app)
    # both blobs cached through their own repositories
    assert (
        request(f"{edge}/v2/{OTHER}/blobs/{other_layer}", headers=_bearer(other_token)).status
        == 200
    )
    assert request(f"{edge}/v2/{APP}/blobs/{app_layer}", headers=_bearer(app_token)).status == 200

    # A's token on B's cached blob (and B's manifest): 401 insufficient_scope, no bytes
    for path in (f"/v2/{OTHER}/blobs/{other_layer}", f"/v2/{OTHER}/manifests/v1"):
        reply = request(edge + path, headers={**_bearer(app_token), **ACCEPT})
        assert reply.status == 401, path
        ch = _challenge(reply.headers["WWW-Authenticate"])
        assert ch["error"] == "insufficient_scope"
        assert ch["scope"] == f"repository:{OTHER}:pull"
        assert stack.other.blobs()[other_layer] not in reply.body
    # B's valid token asking for A's cached blob *through B*: the origin says B has no such
    # blob, so the edge does not serve its cached copy
    reply = request(f"{edge}/v2/{OTHER}/blobs/{app_layer}", headers=_bearer(other_token))
    assert reply.status == 404 and reply.codes() == ["BLOB_UNKNOWN"]
    assert (
        request(
            f"{edge}/v2/{OTHER}/manifests/{stack.app.digest}",
            headers={**_bearer(other_token), **ACCEPT},
        ).status
        == 404
    )
    # a token granting nothing (anonymous has no rule) opens nothing
    empty = stack.token(None, f"repository:{APP}:pull")
    reply = request(f"{edge}/v2/{APP}/blobs/{app_layer}", headers=_bearer(empty))
    assert reply.status == 401


def test_foreign_expired_and_misaddressed_tokens_are_refused(stack: Stack) -> None:
    assert stack.edge is not None
    edge = stack.edge.url
    layer = _layer(stack.app)
    grant = [Access("repository", APP, ("pull",))]
    foreign = TokenIssuer.generate(ISSUER, SERVICE, header="both").issue("dev", grant).token
    now = time.time()
    expired = TokenIssuer.generate(ISSUER, SERVICE, header="both", clock=lambda: now - 3600)
    tokens = {
        "foreign key": foreign,
        "foreign expired": expired.issue("dev", grant, ttl=60).token,
        "garbage": "not-a-jwt",
        "Basic instead of Bearer": None,
    }
    for why, token in tokens.items():
        headers = _bearer(token) if token else {"Authorization": "Basic ZGV2OnBhc3M="}
        reply = request(f"{edge}/v2/{APP}/blobs/{layer}", headers=headers)
        assert reply.status == 401, why
        assert _challenge(reply.headers["WWW-Authenticate"])["error"] == "invalid_token", why
        assert reply.codes() == ["UNAUTHORIZED"], why
    # a genuine token of the origin for another audience (the refresh audience is never valid)
    genuine = stack.token("dev", f"repository:{APP}:pull")
    header, payload, _sig = genuine.split(".")
    tampered = f"{header}.{payload[:-4]}AAAA.{_sig}"
    reply = request(f"{edge}/v2/{APP}/blobs/{layer}", headers=_bearer(tampered))
    assert reply.status == 401


def test_unknown_key_ids_are_fetched_at_most_once_per_interval(stack: Stack) -> None:
    assert stack.edge is not None
    edge = stack.edge.url
    before = _jwks_fetches(stack)
    grant = [Access("repository", APP, ("pull",))]
    for _ in range(12):
        forged = TokenIssuer.generate(ISSUER, SERVICE, header="kid").issue("dev", grant).token
        assert request(f"{edge}/v2/{APP}/manifests/v1", headers=_bearer(forged)).status == 401
    assert _jwks_fetches(stack) - before <= 1


def test_no_password_or_token_in_the_edge_log(stack: Stack) -> None:
    assert stack.edge is not None
    # make sure every path that logs has run at least once
    request(f"{stack.edge.url}/v2/{APP}/manifests/v1", headers=_bearer("x.y.z"))
    text = stack.edge.log_text()
    assert text
    for secret in stack.secrets:
        assert secret not in text
        assert secret[-24:] not in text  # not even a token's signature


def _jwks_fetches(stack: Stack) -> int:
    count = 0
    for line in stack.origin.log_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "/auth/jwks.json" in str(event.get("path", "")):
            count += 1
    return count


def test_the_edge_follows_a_key_rotation_of_the_origin(tmp_path: Path) -> None:
    auth = {"mode": "token", "issuer": ISSUER, "jwks_min_interval": "1s"}
    s = EdgeOriginStack(tmp_path, users=USERS, rules=RULES, upstream={"auth": auth})
    try:
        s.start()
        assert s.edge is not None
        image = make_image(layer_sizes=(8 * KiB,), seed=501)
        s.push(image, APP, "v1", "dev")
        url = f"{s.edge.url}/v2/{APP}/manifests/v1"
        old = s.token("viewer", f"repository:{APP}:pull")
        assert request(url, headers={**_bearer(old), **ACCEPT}).status == 200

        s.origin.stop()
        for name in ("signing-key.pem", "signing-cert.pem"):
            (s.root / "quayside" / "token" / name).unlink()
        s.origin.start()  # same port, a new signing key
        time.sleep(1.2)  # past jwks_min_interval since the edge's last fetch
        new = s.token("viewer", f"repository:{APP}:pull")
        assert request(url, headers={**_bearer(new), **ACCEPT}).status == 200
        stale = request(url, headers={**_bearer(old), **ACCEPT})
        assert stale.status == 401  # the retired key is gone from the edge's key set
        assert _challenge(stale.headers["WWW-Authenticate"])["error"] == "invalid_token"
    finally:
        s.close()
