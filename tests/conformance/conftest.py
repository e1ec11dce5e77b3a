"""Fixtures for our port of the OCI distribution-spec conformance suite (pull, push, discovery,
management) against REAL registry processes.

Every test runs once per implementation (module-scoped parameter ``target``):

- ``origin``: ``python -m regcore.cli origin serve --listen 127.0.0.1:0 --root DIR`` (a child
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

import base64
import gzip
import hashlib
import io
import json
import random
import shutil
import string
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from harness.registry import DockerRegistry
from harness.servers import OriginProcess

IMPLEMENTATIONS = ("origin", "docker-registry")
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


# -- the suite's test data (setup.go's init, rebuilt in Python) --------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

#: Every code the spec's error table lists (the suite's ``errorCodes``).
SPEC_ERROR_CODES = frozenset({
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "MANIFEST_UNVERIFIED",
    "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "TAG_INVALID", "UNAUTHORIZED", "DENIED",
    "UNSUPPORTED",
})

TEST_TAG = "tagtest0"  # testTagName
EMPTY_LAYER_TAG = "emptylayer"  # emptyLayerTestTag
NONEXISTENT_MANIFEST = ".INVALID_MANIFEST_NAME"  # nonexistentManifest (not even a valid tag)
INVALID_MANIFEST = b"blablabla"
ANNOTATION_KEY = "org.opencontainers.conformance.test"
ARTIFACT_TYPE_A = "application/vnd.nhl.peanut.butter.bagel"
ARTIFACT_TYPE_B = "application/vnd.nba.strawberry.jam.croissant"
ARTIFACT_TYPE_INDEX = "application/vnd.food.stand"
WORKFLOWS = 5  # configs/manifests [0..4] are the ones the four workflows use


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def go_json(doc: Any) -> bytes:
    """Serialise like Go's ``json.MarshalIndent(v, "", "\\t")`` (key order as given)."""
    return json.dumps(doc, indent="\t", ensure_ascii=False).encode()


@dataclass(frozen=True)
class Blob:
    """Bytes plus the digest and length strings the suite sends (``TestBlob``)."""

    content: bytes = field(repr=False)
    digest: str

    @classmethod
    def of(cls, content: bytes) -> Blob:
        return cls(content, sha256(content))

    @property
    def length(self) -> str:
        return str(len(self.content))


@dataclass(frozen=True)
class ChunkedBlob:
    """``testBlobB`` split in two chunks: chunk 1 is ``size/2 + 1`` bytes (``setupChunkedBlob``)."""

    blob: Blob
    chunk1: bytes = field(repr=False)
    chunk2: bytes = field(repr=False)

    @classmethod
    def of(cls, size: int, rng: random.Random) -> ChunkedBlob:
        content = rng.randbytes(size)
        cut = size // 2 + 1
        return cls(Blob.of(content), content[:cut], content[cut:])

    @property
    def range1(self) -> str:
        return f"0-{len(self.chunk1) - 1}"

    @property
    def range2(self) -> str:
        return f"{len(self.chunk1)}-{len(self.blob.content) - 1}"


def _descriptor(
    media_type: str, blob: Blob, *, data: bytes | None = None, unspecified: bytes | None = None
) -> dict[str, Any]:
    """A descriptor as the suite encodes it: ``data`` when set, ``newUnspecifiedField`` always."""
    desc: dict[str, Any] = {"mediaType": media_type, "digest": blob.digest, "size": len(blob.content)}
    if data is not None:
        desc["data"] = base64.b64encode(data).decode()
    desc["newUnspecifiedField"] = base64.b64encode(unspecified).decode() if unspecified else None
    return desc


def _layer_tarball() -> bytes:
    """A small deterministic ``.tar.gz`` holding one text file (the suite's test layer)."""
    text = b"you found the quayside conformance layer\n"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("test.txt")
        info.size, info.mtime, info.mode = len(text), 0, 0o644
        tar.addfile(info, io.BytesIO(text))
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass(frozen=True)
class SuiteData:
    """Everything setup.go builds: configs/manifests [0..4], blobs A/B, referrers artifacts.

    The suite's constants ride along as class attributes so test modules (which cannot import
    this conftest) reach them through the ``data`` fixture.
    """

    error_codes: ClassVar[frozenset[str]] = SPEC_ERROR_CODES
    test_tag: ClassVar[str] = TEST_TAG
    empty_layer_tag: ClassVar[str] = EMPTY_LAYER_TAG
    nonexistent_manifest: ClassVar[str] = NONEXISTENT_MANIFEST
    invalid_manifest: ClassVar[bytes] = INVALID_MANIFEST
    annotation_key: ClassVar[str] = ANNOTATION_KEY
    artifact_type_a: ClassVar[str] = ARTIFACT_TYPE_A
    artifact_type_b: ClassVar[str] = ARTIFACT_TYPE_B
    artifact_type_index: ClassVar[str] = ARTIFACT_TYPE_INDEX
    empty_json_digest: ClassVar[str] = EMPTY_JSON_DIGEST

    configs: tuple[Blob, ...]
    manifests: tuple[Blob, ...]
    layer: Blob
    empty_layer_manifest: Blob
    blob_a: Blob
    chunked: ChunkedBlob
    empty_json: Blob
    ref_blob_a: Blob
    ref_blob_b: Blob
    refs_a_config: Blob  # artifact type carried in config.mediaType, subject manifests[4]
    refs_a_layer: Blob  # artifactType field + empty config, subject manifests[4]
    refs_b_config: Blob
    refs_b_layer: Blob
    refs_c_layer: Blob  # subject manifests[3], which this workflow never pushes
    refs_index: Blob  # an index artifact, subject manifests[4]
    annotations: dict[str, str]  # referrer digest -> its annotation value
    dummy_digest: str
    rng: random.Random = field(repr=False, compare=False)

    @classmethod
    def build(cls) -> SuiteData:
        rng = random.Random()
        letters = string.digits + string.ascii_letters + "-"
        configs = []
        for _ in range(WORKFLOWS):
            author = "".join(rng.choice(letters) for _ in range(16))
            image = {
                "author": author,
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
            }
            configs.append(Blob.of(go_json(image)))
        layer = Blob.of(_layer_tarball())
        layer_desc = _descriptor(OCI_LAYER_GZIP, layer)

        def config_desc(cfg: Blob) -> dict[str, Any]:
            return _descriptor(OCI_CONFIG, cfg, data=cfg.content, unspecified=b"hello world")

        manifests = [
            Blob.of(go_json({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config_desc(cfg),
                "layers": [layer_desc],
            }))
            for cfg in configs
        ]
        # no mediaType field and no layers at all (push: "manifest upload with no layers")
        empty_layer_manifest = Blob.of(go_json(
            {"schemaVersion": 2, "config": config_desc(configs[1]), "layers": []}
        ))
        empty_json = Blob.of(b"{}")
        empty_desc = _descriptor(OCI_EMPTY, empty_json)
        ref_a = Blob.of(b"quayside conformance referrer blob A")
        ref_b = Blob.of(b"quayside conformance referrer blob B")
        annotations: dict[str, str] = {}

        def subject(m: Blob) -> dict[str, Any]:
            return _descriptor(OCI_MANIFEST, m)

        def artifact(doc: dict[str, Any], note: str | None) -> Blob:
            if note is not None:
                doc["annotations"] = {ANNOTATION_KEY: note}
            blob = Blob.of(go_json(doc))
            if note is not None:
                annotations[blob.digest] = note
            return blob

        def config_artifact(art_type: str, ref: Blob, note: str) -> Blob:
            return artifact({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": _descriptor(art_type, ref),
                "layers": [empty_desc],
                "subject": subject(manifests[4]),
            }, note)

        def layer_artifact(art_type: str, ref: Blob, subj: Blob, note: str | None) -> Blob:
            return artifact({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": art_type,
                "config": empty_desc,
                "layers": [_descriptor(art_type, ref)],
                "subject": subject(subj),
            }, note)

        refs_a_config = config_artifact(ARTIFACT_TYPE_A, ref_a, "test config a")
        refs_b_config = config_artifact(ARTIFACT_TYPE_B, ref_b, "test config b")
        refs_a_layer = layer_artifact(ARTIFACT_TYPE_A, ref_a, manifests[4], "test layer a")
        refs_b_layer = layer_artifact(ARTIFACT_TYPE_B, ref_b, manifests[4], "test layer b")
        refs_c_layer = layer_artifact(ARTIFACT_TYPE_B, ref_b, manifests[3], None)
        refs_index = artifact({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": ARTIFACT_TYPE_INDEX,
            "manifests": [_descriptor(OCI_MANIFEST, refs_a_config), _descriptor(OCI_MANIFEST, refs_a_layer)],
            "subject": subject(manifests[4]),
        }, "test index")
        return cls(
            configs=tuple(configs),
            manifests=tuple(manifests),
            layer=layer,
            empty_layer_manifest=empty_layer_manifest,
            blob_a=Blob.of(rng.randbytes(42)),
            chunked=ChunkedBlob.of(42, rng),
            empty_json=empty_json,
            ref_blob_a=ref_a,
            ref_blob_b=ref_b,
            refs_a_config=refs_a_config,
            refs_a_layer=refs_a_layer,
            refs_b_config=refs_b_config,
            refs_b_layer=refs_b_layer,
            refs_c_layer=refs_c_layer,
            refs_index=refs_index,
            annotations=annotations,
            dummy_digest=sha256(b"hello world"),
            rng=rng,
        )

    def chunked_of(self, size: int) -> ChunkedBlob:
        """A new chunked blob of ``size`` bytes (when a registry's ``OCI-Chunk-Min-Length``
        exceeds the default chunk)."""
        return ChunkedBlob.of(size, self.rng)


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
    server = OriginProcess(workdir=tmp_path_factory.mktemp("conformance-origin"))
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
    """The suite's blobs and manifests, built once (fresh random config authors per session)."""
    return SuiteData.build()


@pytest.fixture(autouse=True)
def _implementation_expectations(request: pytest.FixtureRequest) -> None:
    if "target" not in request.fixturenames:
        return
    impl = request.getfixturevalue("target").impl
    lacks = request.node.get_closest_marker("reference_lacks")
    if lacks is not None and impl == "docker-registry":
        request.applymarker(pytest.mark.xfail(strict=False, reason=f"registry:2 2.8: {lacks.args[0]}"))
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
            raw += sep + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
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
            "PUT", f"/v2/<name>/manifests/{reference}", headers={"Content-Type": media_type}, body=body
        )


@pytest.fixture
async def oci(target: Target) -> Any:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        yield OciHttp(session, target)


def is_2xx(status: int) -> bool:
    return 200 <= status < 300
