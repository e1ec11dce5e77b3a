"""Property-based tests (hypothesis) against a running, token-protected origin process.

One origin (``auth.token`` + its token service, users ``dev`` (developer) and ``viewer``
(viewer) on ``team/*``) serves every example of the module. Names, references, digests,
``Range`` and ``Content-Range`` values, ``Authorization`` headers, token scopes and manifest
bodies are drawn from broad strategies; every answer must satisfy
:func:`harness.fuzzhttp.check_answer` (no 5xx, no traceback, OCI error JSON with a spec code)
and every refused request (4xx) must leave the storage tree exactly as it was. Tokens issued
for arbitrary scopes never grant more than the caller's role.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.authclients import basic_header
from harness.edgeorigin import SERVICE, EdgeOriginStack
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
    scopes,
    send,
    store_digest,
)
from harness.images import KiB, make_image

pytestmark = pytest.mark.slow

USERS = {"dev": "Dev-fuzz-" + secrets.token_hex(6), "viewer": "View-fuzz-" + secrets.token_hex(6)}
RULES = [{"repository": "team/*", "users": {"dev": "developer", "viewer": "viewer"}}]
REPO = "team/app"


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


MEDIA_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/json",
            "",
        ]
    ),
    header_text,
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


class Fuzz:
    def __init__(self, stack: EdgeOriginStack) -> None:
        self.stack = stack
        self.image = make_image(layer_sizes=(4 * KiB,), seed=911)
        stack.push(self.image, REPO, "v1", "dev")
        self.layer = str(self.image.layers[0].digest)
        self.push_token = stack.token("dev", f"repository:{REPO}:pull,push")
        self.pull_token = stack.token("viewer", f"repository:{REPO}:pull")
        self.host, port = stack.origin.host.rsplit(":", 1)
        self.port = int(port)

    def send(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Answer:
        return send(self.host, self.port, method, path, headers, body)

    def refused_changes_nothing(
        self,
        request: Callable[[], Answer],
        *,
        oauth: bool = False,
        exclude: tuple[str, ...] = (),
    ) -> Answer:
        """``request()`` checked; if refused, the store (but ``exclude``) is unchanged."""
        before = store_digest(self.stack.root, exclude)
        answer = request()
        check_answer(answer, oauth=oauth)
        if answer.status >= 400:
            assert store_digest(self.stack.root, exclude) == before, (
                f"refused {answer.method} changed the store"
            )
        return answer

    def bearer(self, push: bool = True) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.push_token if push else self.pull_token}"}


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    stack = EdgeOriginStack(tmp_path_factory.mktemp("fuzz-origin"), users=USERS, rules=RULES)
    stack.start()
    try:
        yield Fuzz(stack)
    finally:
        stack.close()
    assert stack.origin.server_errors() == []


def _auth(choice: str | None, fuzz: Fuzz) -> dict[str, str]:
    if choice == "push":
        return fuzz.bearer(True)
    if choice == "pull":
        return fuzz.bearer(False)
    return {"Authorization": choice} if choice else {}


AUTH = st.one_of(st.none(), st.sampled_from(["push", "pull"]), authorizations)


@fuzz_settings(300)
@given(
    method=st.sampled_from(["GET", "HEAD", "DELETE", "PUT", "POST", "PATCH", "OPTIONS"]),
    kind=st.sampled_from(["manifests", "blobs", "tags", "referrers", "uploads", "catalog"]),
    name=names,
    ref=st.one_of(references, digests),
    auth=AUTH,
    query=st.one_of(st.none(), header_text),
)
def test_names_references_digests_and_credentials(
    fuzz: Fuzz, method: str, kind: str, name: str, ref: str, auth: str | None, query: str | None
) -> None:
    paths = {
        "manifests": f"/v2/{path_segment(name)}/manifests/{path_segment(ref)}",
        "blobs": f"/v2/{path_segment(name)}/blobs/{path_segment(ref)}",
        "tags": f"/v2/{path_segment(name)}/tags/list",
        "referrers": f"/v2/{path_segment(name)}/referrers/{path_segment(ref)}",
        "uploads": f"/v2/{path_segment(name)}/blobs/uploads/{path_segment(ref)}",
        "catalog": "/v2/_catalog",
    }
    path = paths[kind]
    if query is not None:
        path += "?" + path_segment(query).replace("%3D", "=").replace("%26", "&")
    body = b"{}" if method in ("PUT", "PATCH", "POST") else None
    fuzz.refused_changes_nothing(lambda: fuzz.send(method, path, _auth(auth, fuzz), body))


@fuzz_settings(150)
@given(value=ranges, push=st.booleans())
def test_range_headers_on_a_blob(fuzz: Fuzz, value: str, push: bool) -> None:
    path = f"/v2/{REPO}/blobs/{fuzz.layer}"
    answer = fuzz.refused_changes_nothing(
        lambda: fuzz.send("GET", path, {**fuzz.bearer(push), "Range": value})
    )
    data = fuzz.image.blobs()[fuzz.layer]
    if answer.status == 206:
        start, end = (
            int(x) for x in answer.headers["Content-Range"].split()[1].split("/")[0].split("-")
        )
        assert answer.body == data[start : end + 1]
    elif answer.status == 200:
        assert answer.body == data
    else:
        assert answer.status == 416, answer.status


@fuzz_settings(120)
@given(
    content_range=st.one_of(st.none(), ranges, header_text),
    body=st.binary(max_size=64),
    digest=st.one_of(st.none(), digests),
    close=st.booleans(),
)
def test_upload_content_ranges_and_digests(
    fuzz: Fuzz, content_range: str | None, body: bytes, digest: str | None, close: bool
) -> None:
    start = fuzz.send("POST", f"/v2/{REPO}/blobs/uploads/", fuzz.bearer())
    assert start.status == 202, start.status
    location = start.headers["Location"]
    path = location.split("://", 1)[-1]
    path = path[path.index("/") :] if not location.startswith("/") else location
    headers = {**fuzz.bearer(), "Content-Type": "application/octet-stream"}
    if content_range is not None:
        headers["Content-Range"] = content_range
    if close:
        sep = "&" if "?" in path else "?"
        target = path + (f"{sep}digest={path_segment(digest)}" if digest is not None else "")
        # A failed closing PUT ends its own upload session, as registry:2 does (it cancels the
        # upload); nothing else may change.
        session = f"docker/registry/v2/repositories/{REPO}/_uploads/{path.split('?')[0].rsplit('/', 1)[1]}"
        fuzz.refused_changes_nothing(
            lambda: fuzz.send("PUT", target, headers, body), exclude=(session,)
        )
    else:
        fuzz.refused_changes_nothing(lambda: fuzz.send("PATCH", path, headers, body))


def _mutated_manifest(fuzz: Fuzz, field: str, value: Any) -> bytes:
    doc = json.loads(fuzz.image.manifest)
    target: Any = doc
    parts = field.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    last = parts[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return json.dumps(doc).encode()


@fuzz_settings(150)
@given(
    shape=st.sampled_from(["bytes", "json", "mutated"]),
    raw=st.binary(max_size=200),
    doc=JSON,
    field=st.sampled_from(
        [
            "schemaVersion",
            "mediaType",
            "config",
            "config.digest",
            "config.size",
            "layers",
            "layers.0",
            "layers.0.digest",
            "layers.0.size",
            "layers.0.mediaType",
            "subject",
            "annotations",
            "manifests",
        ]
    ),
    content_type=MEDIA_TYPES,
    reference=st.one_of(st.just("fuzz"), references, digests),
)
def test_manifest_bodies(
    fuzz: Fuzz, shape: str, raw: bytes, doc: Any, field: str, content_type: str, reference: str
) -> None:
    body = {
        "bytes": raw,
        "json": json.dumps(doc).encode(),
        "mutated": _mutated_manifest(fuzz, field, doc),
    }[shape]
    headers = {**fuzz.bearer(), "Content-Type": content_type}
    path = f"/v2/{REPO}/manifests/{path_segment(reference)}"
    fuzz.refused_changes_nothing(lambda: fuzz.send("PUT", path, headers, body))


@fuzz_settings(100)
@given(
    requested=st.lists(scopes, max_size=4),
    service=st.one_of(st.none(), st.just(SERVICE), header_text),
    who=st.one_of(st.none(), st.sampled_from(["dev", "viewer"]), authorizations),
    post=st.booleans(),
)
def test_token_endpoint_scopes_never_grant_more_than_the_role(
    fuzz: Fuzz, requested: list[str], service: str | None, who: str | None, post: bool
) -> None:
    if who in USERS:
        headers = basic_header(who, USERS[who])
    else:
        headers = {"Authorization": who} if who else {}
    params = [("scope", s) for s in requested]
    if service is not None:
        params.append(("service", service))
    if post:
        form = [
            ("grant_type", "password"),
            ("username", who or ""),
            ("password", USERS.get(who or "", "x")),
        ]
        form += [("scope", " ".join(requested))] + ([("service", service)] if service else [])
        body = "&".join(f"{k}={path_segment(v)}" for k, v in form).encode()
        answer = fuzz.refused_changes_nothing(
            lambda: fuzz.send(
                "POST", "/auth/token", {"Content-Type": "application/x-www-form-urlencoded"}, body
            ),
            oauth=True,
        )
    else:
        query = "&".join(f"{k}={path_segment(v)}" for k, v in params)
        answer = fuzz.refused_changes_nothing(
            lambda: fuzz.send("GET", f"/auth/token?{query}", headers), oauth=True
        )
    if answer.status != 200:
        return
    token = json.loads(answer.body)["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    allowed = {"dev": {"pull", "push"}, "viewer": {"pull"}}.get(claims["sub"], set())
    for access in claims["access"]:
        if access["type"] == "registry":
            assert claims["sub"], "anonymous got a catalog grant"
            continue
        assert access["type"] == "repository"
        if not access["name"].startswith("team/"):
            assert access["actions"] == [], access
        assert set(access["actions"]) <= allowed, (claims["sub"], access)


@fuzz_settings(100)
@given(auth=authorizations, method=st.sampled_from(["POST", "PUT", "DELETE", "PATCH"]))
def test_bad_credentials_never_write(fuzz: Fuzz, auth: str, method: str) -> None:
    paths = {
        "POST": f"/v2/{REPO}/blobs/uploads/",
        "PUT": f"/v2/{REPO}/manifests/v1",
        "DELETE": f"/v2/{REPO}/manifests/{fuzz.image.digest}",
        "PATCH": f"/v2/{REPO}/blobs/uploads/00000000-0000-0000-0000-000000000000",
    }
    answer = fuzz.refused_changes_nothing(
        lambda: fuzz.send(method, paths[method], {"Authorization": auth}, fuzz.image.manifest)
    )
    assert answer.status in (400, 401, 403, 404, 405, 429), answer.status


def test_the_store_still_serves_the_image(fuzz: Fuzz) -> None:
    answer = fuzz.send(
        "GET", f"/v2/{REPO}/manifests/v1", {**fuzz.bearer(False), "Accept": fuzz.image.media_type}
    )
    assert answer.status == 200 and answer.body == fuzz.image.manifest
