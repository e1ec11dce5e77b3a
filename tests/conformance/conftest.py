"""Fixtures for our port of the OCI distribution-spec conformance suite (pull, push, discovery,
management) against REAL registry processes.

Every test runs once per implementation (module-scoped parameter ``target``):

- ``origin``: ``python -m quayside origin serve --listen 127.0.0.1:0 --root DIR`` (a child
  process started by :class:`harness.servers.OriginProcess`, its URL read from the
  ``{"event": "listening"}`` line it prints);
- ``docker-registry``: Debian's distribution 2.8 (:class:`harness.registry.DockerRegistry`), the
  reference point.

Both servers are session-scoped and, like the suite's single ``OCI_NAMESPACE``, all four
workflows use one repository (``conformance/oci``), run in the suite's order (pull, push,
discovery, management: see ``pytest_collection_modifyitems``), so a workflow meets what the
previous ones left behind exactly as under ginkgo. Each module still runs alone (its own setup
pushes all it needs). pytest groups a module's tests by implementation, so within one the tests
run in file order, like the ginkgo specs; state between steps (the Go suite's
``lastResponse``...) lives in the module-scoped ``state`` dict.

Markers (registered here, applied by an autouse fixture):

- ``@pytest.mark.reference_lacks("why")``: ``xfail(strict=False)`` on docker-registry only —
  a feature distribution 2.8 does not have (referrers, ``OCI-Subject``...).
- ``@pytest.mark.origin_bug("why")``: ``xfail(strict=True)`` on the origin only — a known origin
  bug; the test flips to XPASS (a failure) once it is fixed, so the marker must then go.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from harness.conformancedata import SuiteData
from harness.registry import DockerRegistry
from harness.servers import OriginProcess

IMPLEMENTATIONS = ("origin", "docker-registry")
#: The reference implementation (see :meth:`Target.accepts`).
REFERENCE = "docker-registry"
#: One repository for all four workflows, like the suite's single ``OCI_NAMESPACE``.
NAMESPACE = "conformance/oci"
#: The suite's workflow order; pytest would otherwise run the modules alphabetically.
WORKFLOW_ORDER = ("test_oci_pull", "test_oci_push", "test_oci_discovery", "test_oci_management")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reference_lacks(reason): xfail (non-strict) on docker-registry 2.8 only"
    )
    config.addinivalue_line(
        "markers", "origin_bug(reason): xfail (strict) on the origin only: a known origin bug"
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the conformance modules in the suite's order (pull, push, discovery, management).

    A stable sort on the module's rank only: items of other directories keep their places
    (rank -1 sorts them first), and each module keeps pytest's own order (file order, grouped
    by implementation).
    """

    def rank(item: pytest.Item) -> int:
        stem = item.path.stem
        return WORKFLOW_ORDER.index(stem) if stem in WORKFLOW_ORDER else -1

    if any(rank(item) >= 0 for item in items):
        items.sort(key=rank)


# -- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def origin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # deletes enabled explicitly (the default is off): the management workflow then demands
    # the spec's answers from the origin (see :meth:`Target.accepts`)
    server = OriginProcess(
        workdir=tmp_path_factory.mktemp("conformance-origin"),
        env={"REGISTRY_STORAGE_DELETE_ENABLED": "true"},
    )
    try:
        yield server.start().url
    finally:
        server.close()


@pytest.fixture(scope="session")
def reference_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (make sysdeps)")
    registry = DockerRegistry(workdir=tmp_path_factory.mktemp("conformance-registry"))
    try:
        yield registry.start().url
    finally:
        registry.close()


# -- per-module target and state ---------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One implementation under test and the names a workflow module uses on it."""

    impl: str
    url: str
    name: str  # the Go suite's OCI_NAMESPACE (``<name>``)
    crossmount_name: str  # OCI_CROSSMOUNT_NAMESPACE

    @property
    def is_reference(self) -> bool:
        """The registry:2 run: the only one the suite's "unless disallowed" tolerances apply to."""
        return self.impl == REFERENCE

    def accepts(self, spec: int, *, reference_tolerates: tuple[int, ...]) -> set[int]:
        """The statuses a step accepts: the spec's answer ``spec`` from the origin (deletes
        enabled, so nothing is "disallowed"), plus the suite's tolerances (a registry that
        disallows deletes, or has already deleted) on the registry:2 reference run only."""
        return {spec, *reference_tolerates} if self.is_reference else {spec}


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def target(request: pytest.FixtureRequest) -> Target:
    impl: str = request.param
    url = request.getfixturevalue("origin_url" if impl == "origin" else "reference_url")
    return Target(
        impl=impl,
        url=url,
        name=NAMESPACE,
        crossmount_name=f"conformance-{uuid.uuid4()}",
    )


@pytest.fixture(scope="module")
def state(target: Target) -> dict[str, Any]:
    """Values one step hands to the next (the Go suite's package variables), per target."""
    return {}


@pytest.fixture(scope="session")
def data() -> SuiteData:
    """The suite's blobs and manifests (:mod:`harness.conformancedata`), built once (fresh
    random config authors per session)."""
    return SuiteData.build()


@pytest.fixture(autouse=True)
def _implementation_expectations(request: pytest.FixtureRequest) -> None:
    if "target" not in request.fixturenames:
        return
    impl = request.getfixturevalue("target").impl
    lacks = request.node.get_closest_marker("reference_lacks")
    if lacks is not None and impl == "docker-registry":
        request.applymarker(
            pytest.mark.xfail(strict=False, reason=f"registry:2 2.8: {lacks.args[0]}")
        )
    bug = request.node.get_closest_marker("origin_bug")
    if bug is not None and impl == "origin":
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"origin bug: {bug.args[0]}"))


# -- HTTP --------------------------------------------------------------------------------------


@dataclass
class Reply:
    """A fully read response: status, headers, body (what the Go suite's reggie.Response holds)."""

    method: str
    url: str
    status: int
    headers: Any  # CIMultiDictProxy[str]
    body: bytes = field(repr=False)

    def header(self, key: str) -> str:
        """The header's value, or ``""`` when absent (like Go's ``Header().Get``)."""
        return str(self.headers.get(key, ""))

    def relative_location(self) -> str:
        """``Location`` as path + query (an absolute URL is reduced, a relative one kept)."""
        loc = self.header("Location")
        if not loc:
            return ""
        url = URL(loc, encoded=True)
        if url.is_absolute():
            return url.raw_path_qs
        return loc

    def json(self) -> Any:
        return json.loads(self.body)

    def error_codes(self) -> list[str]:
        """The ``code`` of every entry of an OCI error envelope (``[]`` if the body is not one)."""
        try:
            doc = self.json()
        except ValueError:
            return []
        errs = doc.get("errors") if isinstance(doc, dict) else None
        return [str(e.get("code")) for e in errs or [] if isinstance(e, dict)]

    def describe(self) -> str:
        return f"{self.method} {self.url} -> {self.status} {dict(self.headers)} {self.body[:300]!r}"


class OciHttp:
    """Literal HTTP against one target: ``<name>`` in a path is the module's repository name.

    No retries, no redirects followed, no auth: each call is exactly one request, so a test sees
    the status the registry chose.
    """

    def __init__(self, session: aiohttp.ClientSession, target: Target) -> None:
        self.session = session
        self.target = target

    def url(self, path: str, *, name: str | None = None, **query: str) -> URL:
        path = path.replace("<name>", name or self.target.name)
        raw = self.target.url + path
        if query:
            sep = "&" if "?" in raw else "?"
            # percent-encoded like Go's url.Values.Encode (the suite's client): "sha256%3A..."
            raw += sep + "&".join(
                f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items()
            )
        return URL(raw, encoded=True)

    async def request(
        self,
        method: str,
        path: str,
        *,
        name: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        **query: str,
    ) -> Reply:
        url = self.url(path, name=name, **query)
        async with self.session.request(
            method, url, headers=headers or {}, data=body, allow_redirects=False
        ) as resp:
            try:
                payload = await resp.read()
            except aiohttp.ClientPayloadError as exc:
                # e.g. distribution's 416 keeps the blob's Content-Length: keep the status
                payload = f"<unreadable body: {exc}>".encode()
            return Reply(method, str(url), resp.status, resp.headers, payload)

    async def push_blob(self, blob: bytes, digest: str) -> Reply:
        """The suite's two-step monolithic push: POST a session, PUT the bytes with ``?digest=``."""
        start = await self.request("POST", "/v2/<name>/blobs/uploads/")
        assert start.header("Location"), start.describe()
        return await self.request(
            "PUT",
            start.relative_location(),
            headers={"Content-Type": "application/octet-stream"},
            body=blob,
            digest=digest,
        )

    async def put_manifest(self, reference: str, body: bytes, media_type: str) -> Reply:
        return await self.request(
            "PUT",
            f"/v2/<name>/manifests/{reference}",
            headers={"Content-Type": media_type},
            body=body,
        )


@pytest.fixture
async def oci(target: Target) -> Any:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        yield OciHttp(session, target)


def is_2xx(status: int) -> bool:
    return 200 <= status < 300
