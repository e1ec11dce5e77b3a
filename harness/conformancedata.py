"""The OCI distribution-spec conformance suite's test data (``setup.go``'s ``init``), rebuilt in
Python for ``tests/conformance``: configs and manifests [0..4], blobs A/B (B also in two chunks),
the empty-layer manifest and the referrers artifacts, plus the suite's constants.

Guarantees: :meth:`SuiteData.build` is pure apart from its own :class:`random.Random` (fresh
config authors and blob bytes per call; layer, referrer blobs and empty JSON are fixed); every
document is serialised like Go's ``json.MarshalIndent(v, "", "\\t")`` with keys in the order
the suite writes them, and every :class:`Blob` carries the sha256 digest of its exact bytes.
It lives in :mod:`harness` (not beside the conftest) because the tests run with
``--import-mode=importlib``, where a conftest cannot import a sibling module.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import random
import string
import tarfile
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.images import sha256_digest as sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

#: Every code the spec's error table lists (the suite's ``errorCodes``).
SPEC_ERROR_CODES = frozenset(
    {
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "MANIFEST_UNVERIFIED",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "TAG_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
    }
)

TEST_TAG = "tagtest0"  # testTagName
EMPTY_LAYER_TAG = "emptylayer"  # emptyLayerTestTag
NONEXISTENT_MANIFEST = ".INVALID_MANIFEST_NAME"  # nonexistentManifest (not even a valid tag)
INVALID_MANIFEST = b"blablabla"
ANNOTATION_KEY = "org.opencontainers.conformance.test"
ARTIFACT_TYPE_A = "application/vnd.nhl.peanut.butter.bagel"
ARTIFACT_TYPE_B = "application/vnd.nba.strawberry.jam.croissant"
ARTIFACT_TYPE_INDEX = "application/vnd.food.stand"
WORKFLOWS = 5  # configs/manifests [0..4] are the ones the four workflows use


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
    desc: dict[str, Any] = {
        "mediaType": media_type,
        "digest": blob.digest,
        "size": len(blob.content),
    }
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
    the conftest) reach them through the ``data`` fixture.
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
            Blob.of(
                go_json(
                    {
                        "schemaVersion": 2,
                        "mediaType": OCI_MANIFEST,
                        "config": config_desc(cfg),
                        "layers": [layer_desc],
                    }
                )
            )
            for cfg in configs
        ]
        # no mediaType field and no layers at all (push: "manifest upload with no layers")
        empty_layer_manifest = Blob.of(
            go_json({"schemaVersion": 2, "config": config_desc(configs[1]), "layers": []})
        )
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
            return artifact(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": _descriptor(art_type, ref),
                    "layers": [empty_desc],
                    "subject": subject(manifests[4]),
                },
                note,
            )

        def layer_artifact(art_type: str, ref: Blob, subj: Blob, note: str | None) -> Blob:
            return artifact(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "artifactType": art_type,
                    "config": empty_desc,
                    "layers": [_descriptor(art_type, ref)],
                    "subject": subject(subj),
                },
                note,
            )

        refs_a_config = config_artifact(ARTIFACT_TYPE_A, ref_a, "test config a")
        refs_b_config = config_artifact(ARTIFACT_TYPE_B, ref_b, "test config b")
        refs_a_layer = layer_artifact(ARTIFACT_TYPE_A, ref_a, manifests[4], "test layer a")
        refs_b_layer = layer_artifact(ARTIFACT_TYPE_B, ref_b, manifests[4], "test layer b")
        refs_c_layer = layer_artifact(ARTIFACT_TYPE_B, ref_b, manifests[3], None)
        refs_index = artifact(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "artifactType": ARTIFACT_TYPE_INDEX,
                "manifests": [
                    _descriptor(OCI_MANIFEST, refs_a_config),
                    _descriptor(OCI_MANIFEST, refs_a_layer),
                ],
                "subject": subject(manifests[4]),
            },
            "test index",
        )
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
