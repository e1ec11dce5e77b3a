"""Property-based tests (hypothesis) against a running edge in front of a token-protected
origin, and a second edge guarding a public upstream with its own htpasswd users.

Both edges and the origin are real processes started once for the module. Names,
references, digests, ``?ns=`` values, ``Range`` and ``Authorization`` headers and methods are
drawn from broad strategies. Every answer satisfies :func:`harness.fuzzhttp.check_answer` (no
5xx, no traceback, OCI error JSON with a spec code); a refused request serves no cached byte
and changes neither the edge's cache nor the origin's store; only a genuine token (or a real
edge user) opens anything.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.authstack import start_configured_edge
from harness.edgeorigin import EdgeOriginStack
from harness.fuzzhttp import (
    Answer,
    authorizations,
    check_answer,
    digests,
    header_text,
    names,
    path_segment,
    ranges,
    references,
    send,
    store_digest,
)
from harness.images import KiB, make_image
from harness.servers import EdgeProcess
from regcore.auth.htpasswd import hash_password, write_entries

pytestmark = pytest.mark.slow

USERS = {"dev": "Dev-efuzz-" + secrets.token_hex(6)}
RULES = [{"repository": "team/*", "users": {"dev": "developer"}}]
EDGE_USER, EDGE_PASSWORD = "mirror", "Mirror-efuzz-" + secrets.token_hex(6)
REPO = "team/app"
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class EdgeFuzz:
    def __init__(self, stack: EdgeOriginStack, users_edge: EdgeProcess) -> None:
        assert stack.edge is not None
        self.stack = stack
        self.edge = stack.edge
        self.users_edge = users_edge
        self.image = make_image(layer_sizes=(6 * KiB, 3 * KiB), seed=1201)
        stack.push(self.image, REPO, "v1", "dev")
        self.token = stack.token("dev", f"repository:{REPO}:pull")
        self.cached, self.uncached = (str(layer.digest) for layer in self.image.layers)
        warm = self.send("GET", f"/v2/{REPO}/blobs/{self.cached}", self.bearer())
        assert warm.status == 200
        self.secrets = [self.token, *USERS.values(), EDGE_PASSWORD]

    def send(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        users: bool = False,
        source: str | None = None,
    ) -> Answer:
        edge = self.users_edge if users else self.edge
        return send("127.0.0.1", edge.port, method, path, headers, source=source)

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def state(self) -> tuple[str, str, str]:
        """The origin's store, and the cached blobs of both edges (files, not the index)."""
        return (
            store_digest(self.stack.root),
            _cache_digest(self.edge.cache_dir),
            _cache_digest(self.users_edge.cache_dir),
        )

    def refused_changes_nothing(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        *,
        users: bool = False,
        source: str | None = None,
    ) -> Answer:
        before = self.state()
        answer = self.send(method, path, headers, users=users, source=source)
        check_answer(answer)
        if answer.status >= 400:
            assert self.state() == before, f"refused {method} {path!r} changed a store"
            for data in self.image.blobs().values():
                assert data not in answer.body
        return answer


def _cache_digest(cache_dir: Path) -> str:
    files = []
    for dirpath, _dirs, names_ in os.walk(cache_dir):
        for name in names_:
            if "blobs" in dirpath and not name.startswith("."):
                path = os.path.join(dirpath, name)
                try:
                    files.append((os.path.relpath(path, cache_dir), os.path.getsize(path)))
                except FileNotFoundError:
                    continue
    return repr(sorted(files))


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeFuzz]:
    tmp = tmp_path_factory.mktemp("fuzz-edge")
    stack = EdgeOriginStack(tmp, users=USERS, rules=RULES)
    stack.start()
    users_edge: EdgeProcess | None = None
    try:
        htpasswd = tmp / "edge-users"
        write_entries(htpasswd, {EDGE_USER: hash_password(EDGE_PASSWORD, cost=4)})
        users_edge = start_configured_edge(
            tmp / "users-edge",
            [{"name": "origin", "url": stack.origin.url}],
            name="users",
            top={"auth": {"htpasswd": {"path": str(htpasswd)}}},
        )
        yield EdgeFuzz(stack, users_edge)
    finally:
        if users_edge is not None:
            users_edge.close()
        stack.close()
    for edge in (stack.edge, users_edge):
        assert edge is not None
        assert edge.server_errors() == []
        text = edge.log_text()
        for secret in (*USERS.values(), EDGE_PASSWORD):
            assert secret not in text


AUTH = st.one_of(st.none(), st.just("token"), authorizations)
NS = st.one_of(
    st.none(), st.just("origin"), header_text, st.sampled_from(["\x00", "%00", "a\r\nb"])
)


def _headers(fuzz: EdgeFuzz, auth: str | None) -> dict[str, str]:
    if auth == "token":
        return fuzz.bearer()
    return {"Authorization": auth} if auth else {}


@fuzz_settings(300)
@given(
    method=st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH"]),
    kind=st.sampled_from(["manifests", "blobs", "tags", "referrers", "catalog", "base"]),
    name=names,
    ref=st.one_of(references, digests),
    ns=NS,
    auth=AUTH,
)
def test_edge_names_references_digests_namespaces(
    fuzz: EdgeFuzz, method: str, kind: str, name: str, ref: str, ns: str | None, auth: str | None
) -> None:
    paths = {
        "manifests": f"/v2/{path_segment(name)}/manifests/{path_segment(ref)}",
        "blobs": f"/v2/{path_segment(name)}/blobs/{path_segment(ref)}",
        "tags": f"/v2/{path_segment(name)}/tags/list",
        "referrers": f"/v2/{path_segment(name)}/referrers/{path_segment(ref)}",
        "catalog": "/v2/_catalog",
        "base": "/v2/",
    }
    path = paths[kind] + (f"?ns={path_segment(ns)}" if ns is not None else "")
    headers = {**_headers(fuzz, auth), "Accept": ACCEPT}
    answer = fuzz.refused_changes_nothing(method, path, headers)
    if ns is not None and answer.status != 405 and kind != "base":
        assert answer.headers.get("OCI-Namespace") in (None, ns)


@fuzz_settings(200)
@given(value=ranges, cached=st.booleans())
def test_edge_range_headers(fuzz: EdgeFuzz, value: str, cached: bool) -> None:
    digest = fuzz.cached if cached else fuzz.uncached
    answer = fuzz.send("GET", f"/v2/{REPO}/blobs/{digest}", {**fuzz.bearer(), "Range": value})
    check_answer(answer)
    data = fuzz.image.blobs()[digest]
    if answer.status == 206:
        span = answer.headers["Content-Range"].split()[1].split("/")[0]
        start, end = (int(x) for x in span.split("-"))
        assert answer.body == data[start : end + 1]
    elif answer.status == 200:
        assert answer.body == data
    else:
        assert answer.status == 416, answer.status


@fuzz_settings(200)
@given(auth=authorizations, target=st.sampled_from(["blob", "manifest", "base"]))
def test_edge_authorization_headers_open_nothing(fuzz: EdgeFuzz, auth: str, target: str) -> None:
    path = {
        "blob": f"/v2/{REPO}/blobs/{fuzz.cached}",
        "manifest": f"/v2/{REPO}/manifests/v1",
        "base": "/v2/",
    }[target]
    answer = fuzz.refused_changes_nothing("GET", path, {"Authorization": auth, "Accept": ACCEPT})
    assert answer.status in (401, 429), answer.status
    assert answer.headers["WWW-Authenticate"].startswith("Bearer realm=")


@fuzz_settings(150)
@given(auth=st.one_of(st.none(), authorizations, st.just("right")), base=st.booleans())
def test_edge_users_refuse_every_wrong_credential(
    fuzz: EdgeFuzz, auth: str | None, base: bool
) -> None:
    if auth == "right":
        headers = {
            "Authorization": "Basic "
            + base64.b64encode(f"{EDGE_USER}:{EDGE_PASSWORD}".encode()).decode()
        }
    else:
        headers = {"Authorization": auth} if auth else {}
    path = "/v2/" if base else f"/v2/{REPO}/blobs/{fuzz.cached}"
    # wrong credentials come from another address than the right ones: failed sign-ins are
    # throttled per address, and the legitimate user must not be locked out by them
    source = "127.0.0.1" if auth == "right" else "127.0.0.2"
    answer = fuzz.refused_changes_nothing("GET", path, headers, users=True, source=source)
    if auth == "right":
        # signed in; then the upstream decides (token-protected, and this edge has no
        # credentials of its own: its 401 is relayed, saying it came from the upstream)
        assert answer.status in (200, 401), answer.status
        if answer.status == 401 and not base:
            assert b"upstream answered 401" in answer.body
    else:
        assert answer.status in (401, 429), answer.status
        if answer.status == 401:
            assert answer.headers["WWW-Authenticate"] == 'Basic realm="quayside-edge"'


def test_no_secret_in_any_edge_log(fuzz: EdgeFuzz) -> None:
    for edge in (fuzz.edge, fuzz.users_edge):
        text = edge.log_text()
        assert text
        for secret in fuzz.secrets:
            assert secret not in text
