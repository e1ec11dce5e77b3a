"""Manifest ``Accept`` negotiation: the origin, an edge in front of it and Debian's real
``docker-registry`` (registry:2, distribution 2.8.2) hold the same content and are asked the
same GET and HEAD requests, by tag and by digest, with single-type and common ``Accept``
headers.

Content: a Docker manifest list with a linux/arm64 child listed *before* its linux/amd64 one
(the child is chosen by platform, not position), a Docker list with no linux/amd64 child, an
OCI index, an OCI image manifest and a Docker schema 2 manifest. Each answer is reduced to
``"<status> <what>"``: the object itself (``self``), the list's ``amd64`` child, a ``schema1``
rewrite, or the error code. A 200 must be one of the pushed manifests (schema 1 aside), with
its own ``Content-Type``, ``Docker-Content-Digest``, ``ETag`` and ``Content-Length``, on the
GET and on the HEAD alike; a HEAD has the GET's status.

:data:`ALIKE` is the table every server answers the same; :data:`DIFFERENCES` the documented
differences (regcore/mediatypes.py's docstring), with each side's answer pinned.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import aiohttp
import pytest

from harness import oci_http
from harness.edgeorigin import request
from harness.images import Image, ImageIndex, Platform, make_image, make_index
from harness.registry import DockerRegistry
from harness.servers import ServerGroup
from regcore import mediatypes as mt

pytestmark = pytest.mark.slow

if shutil.which("docker-registry") is None:  # pragma: no cover
    pytest.skip("docker-registry is not installed", allow_module_level=True)

REPO = "team/accept"
SERVERS = ("origin", "edge", "registry")
ACCEPTS: dict[str, str | None] = {
    "docker": mt.DOCKER_MANIFEST,
    "list": mt.DOCKER_MANIFEST_LIST,
    "oci": mt.OCI_MANIFEST,
    "index": mt.OCI_INDEX,
    "single": f"{mt.OCI_MANIFEST}, {mt.DOCKER_MANIFEST}",
    "all": ", ".join(mt.DEFAULT_ACCEPT),
    "none": None,
    "any": "*/*",
    "json": mt.JSON,
}
ARM64, AMD64 = Platform("linux", "arm64", "v8"), Platform("linux", "amd64")


def _items() -> dict[str, Image | ImageIndex]:
    return {
        "list": make_index(flavour="docker", platforms=(ARM64, AMD64), seed=7100),
        "list-arm": make_index(flavour="docker", platforms=(ARM64,), seed=7200),
        "index": make_index(flavour="oci", platforms=(ARM64, AMD64), seed=7300),
        "oci": make_image(flavour="oci", seed=7400),
        "docker": make_image(flavour="docker", seed=7500),
    }


def _row(by: str, **answers: str) -> dict[tuple[str, str], str]:
    return {(by, accept): answer for accept, answer in answers.items()}


S, U = "200 self", "404 MANIFEST_UNKNOWN"
ALIKE: dict[str, dict[tuple[str, str], str]] = {
    "list": {
        **_row("tag", docker="200 amd64", list=S, single="200 amd64", all=S),
        **_row("digest", **dict.fromkeys(ACCEPTS, S)),
    },
    "list-arm": {
        **_row("tag", docker=U, list=S, oci=U, index=U, single=U, all=S),
        **_row("digest", **dict.fromkeys(ACCEPTS, S)),
    },
    "index": {
        **_row("tag", docker=U, list=U, oci=U, index=S, single=U, all=S),
        **_row("digest", docker=U, list=U, oci=U, index=S, single=U, all=S),
    },
    "oci": {
        **_row("tag", docker=U, list=U, oci=S, index=U, single=S, all=S),
        **_row("digest", docker=U, list=U, oci=S, index=U, single=S, all=S),
    },
    "docker": {
        **_row("tag", docker=S, single=S, all=S),
        **_row("digest", **dict.fromkeys(ACCEPTS, S)),
    },
}
# (object, by, accept) -> (answer of the origin and the edge, answer of registry:2 2.8)
DIFFERENCES: dict[tuple[str, str, str], tuple[str, str]] = {
    # never converted: 2.8 rewrites schema 2 to schema 1 by tag for a client not listing
    # schema 2; Quayside serves it as is, or refuses the narrowed child as distribution 3 does
    **{("list", "tag", a): ("400 MANIFEST_INVALID", "200 schema1") for a in ("oci", "index")},
    **{("docker", "tag", a): (S, "200 schema1") for a in ("list", "oci", "index")},
    # no manifest type named (no Accept, */*, application/json): the stored manifest
    **{("list", "tag", a): (S, "200 schema1") for a in ("none", "any", "json")},
    **{("docker", "tag", a): (S, "200 schema1") for a in ("none", "any", "json")},
    **{("list-arm", "tag", a): (S, U) for a in ("none", "any", "json")},
    **{(o, by, a): (S, U) for o in ("index", "oci") for by in ("tag", "digest") for a in ("none", "any", "json")},
}  # fmt: skip


@dataclass
class Parity:
    urls: dict[str, str]
    items: dict[str, Image | ImageIndex]


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parity]:
    """registry:2 and the origin with the same content (pushed over the API, tag = object
    name), and an edge whose only upstream is the origin."""
    tmp = tmp_path_factory.mktemp("accept-parity")
    items = _items()
    group = ServerGroup(tmp / "servers")
    registry = DockerRegistry(workdir=tmp / "registry")
    try:
        registry.start()
        origin = group.origin()
        edge = group.edge({"origin": origin.url})
        asyncio.run(_push_all((registry.url, origin.url), items))
        yield Parity({"origin": origin.url, "edge": edge.url, "registry": registry.url}, items)
        for server in group.started:
            assert server.server_errors() == [], server.name
    finally:
        print(group.log_tails())
        group.close()
        registry.close()


async def _push_all(urls: tuple[str, ...], items: dict[str, Image | ImageIndex]) -> None:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for url in urls:
            for tag, item in items.items():
                await oci_http.push_image(session, url, REPO, tag, item)


def answer(parity: Parity, server: str, name: str, by: str, accept: str) -> str:
    """GET and HEAD of object ``name`` by ``by`` with ``ACCEPTS[accept]``, as ``"<status>
    <what>"``; asserts the headers of a 200 against the bytes and HEAD against GET."""
    item = parity.items[name]
    ref = name if by == "tag" else item.digest
    url = f"{parity.urls[server]}/v2/{REPO}/manifests/{ref}"
    value = ACCEPTS[accept]
    headers = {"Accept": value} if value is not None else {}
    got = request(url, headers=headers)
    head = request(url, method="HEAD", headers=headers)
    where = (server, name, by, accept)
    assert head.status == got.status, where
    assert head.body == b"", where
    if got.status != 200:
        return f"{got.status} {','.join(got.codes())}"
    got_headers, head_headers = _lower(got.headers), _lower(head.headers)
    if got_headers.get("content-type") == mt.DOCKER_SCHEMA1_SIGNED:
        return "200 schema1"  # registry:2.8's rewrite (its digest is the signed payload's)
    digest = "sha256:" + hashlib.sha256(got.body).hexdigest()
    served = {item.digest: ("self", item.media_type)}
    for child in item.images if isinstance(item, ImageIndex) else ():
        served[child.digest] = (child.platform.architecture, child.media_type)
    assert digest in served, where
    what, media_type = served[digest]
    want = {
        "content-type": media_type,
        "content-length": str(len(got.body)),
        "docker-content-digest": digest,
        "etag": f'"{digest}"',
    }
    assert {k: got_headers.get(k) for k in want} == want, where
    assert {k: head_headers.get(k) for k in want} == want, where
    return f"200 {what}"


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}  # registry:2 (Go) says "Etag"


@pytest.mark.parametrize("server", SERVERS)
def test_docker_list_by_tag_is_its_linux_amd64_child_for_a_client_taking_no_lists(
    parity: Parity, server: str
) -> None:
    listed = parity.items["list"]
    assert isinstance(listed, ImageIndex)
    amd64 = next(i for i in listed.images if i.platform == AMD64)
    base = f"{parity.urls[server]}/v2/{REPO}/manifests"
    for accept in (ACCEPTS["docker"], ACCEPTS["single"]):
        assert accept is not None
        for method in ("GET", "HEAD"):
            got = request(f"{base}/list", method=method, headers={"Accept": accept})
            assert got.status == 200, (method, accept, got.body)
            assert got.body == (amd64.manifest if method == "GET" else b"")
            assert got.headers["Docker-Content-Digest"] == amd64.digest
            assert got.headers["Content-Type"] == mt.DOCKER_MANIFEST
            assert got.headers["Content-Length"] == str(len(amd64.manifest))
        by_digest = request(f"{base}/{listed.digest}", headers={"Accept": accept})
        assert (by_digest.status, by_digest.body) == (200, listed.manifest)
        assert by_digest.headers["Docker-Content-Digest"] == listed.digest


@pytest.mark.parametrize("name", list(ALIKE))
@pytest.mark.parametrize("server", SERVERS)
def test_every_server_answers_the_accept_table_alike(
    parity: Parity, server: str, name: str
) -> None:
    want = ALIKE[name]
    got = {(by, accept): answer(parity, server, name, by, accept) for by, accept in want}
    assert got == want


@pytest.mark.parametrize("server", SERVERS)
def test_documented_differences_from_registry_2_8(parity: Parity, server: str) -> None:
    side = 1 if server == "registry" else 0
    want = {key: answers[side] for key, answers in DIFFERENCES.items()}
    got = {key: answer(parity, server, *key) for key in DIFFERENCES}
    assert got == want


def test_the_tables_cover_every_object_reference_and_accept() -> None:
    """Nothing asked is left out of both tables (and nothing is in both)."""
    alike = {(name, by, accept) for name, rows in ALIKE.items() for by, accept in rows}
    every = {(n, by, a) for n in _items() for by in ("tag", "digest") for a in ACCEPTS}
    assert alike.isdisjoint(DIFFERENCES)
    assert alike | set(DIFFERENCES) == every
