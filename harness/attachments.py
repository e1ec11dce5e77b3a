"""Signatures and scan reports built the way the tools build them, for tests.

skopeo 1.9.3 and podman 4.3 as packaged by Debian cannot sign with sigstore keys ("Debian-local
change: sigstore disabled"), and cosign is not packaged, so tests make the artifacts here, byte
for byte in the published formats, and tests/regcore/test_policy_fixture.py checks our
verification against a signature made by the real cosign (a fixture from cosign's test data).

- :func:`cosign_signature`: what ``cosign sign --key`` pushes (and containers/image's sigstore
  attachments): an OCI image manifest tagged ``sha256-<hex>.sig``; its config an OCI image
  config whose ``rootfs.diff_ids`` are the payload digests; each layer a simple signing payload
  (``application/vnd.dev.cosign.simplesigning.v1+json``) annotated with the base64 signature
  (``dev.cosignproject.cosign/signature``). With ``subject`` it is cosign's OCI 1.1 form
  (``artifactType: application/vnd.dev.cosign.artifact.sig.v1+json``, empty config).
- :func:`bundle_signature`: cosign 3's Sigstore bundle referrer (a DSSE envelope around an
  in-toto statement naming the image).
- :func:`report_artifact`: a scan report attached as a referrer the way
  ``oras attach --artifact-type`` / trivy-plugin-referrer do (empty config or the report's
  type as config type, one layer, ``subject``, a creation annotation).
- :class:`SigningKey`: an ECDSA P-256 / RSA / Ed25519 key with cosign's signing scheme.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from regcore.client import RegistryClient
from regcore.policy import signatures as sg
from regcore.policy.evidence import FetchedManifest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
KeyKind = Literal["ecdsa", "rsa", "ed25519"]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class SigningKey:
    """A private key signing as cosign does for its type (see :mod:`regcore.policy.keys`)."""

    kind: KeyKind = "ecdsa"
    private: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.private is None:
            if self.kind == "ecdsa":
                self.private = ec.generate_private_key(ec.SECP256R1())
            elif self.kind == "rsa":
                self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            else:
                self.private = ed25519.Ed25519PrivateKey.generate()

    def sign(self, message: bytes) -> bytes:
        if self.kind == "ecdsa":
            return self.private.sign(message, ec.ECDSA(hashes.SHA256()))  # type: ignore[no-any-return]
        if self.kind == "rsa":
            return self.private.sign(message, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[no-any-return]
        return self.private.sign(message)  # type: ignore[no-any-return]

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(  # type: ignore[no-any-return]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def write_public(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_bytes(self.public_pem())
        return p


@dataclass(frozen=True)
class Artifact:
    """A manifest to push (``media_type``, ``manifest``) with the blobs it references."""

    manifest: bytes
    blobs: dict[str, bytes]
    media_type: str = OCI_MANIFEST

    @property
    def digest(self) -> str:
        return _digest(self.manifest)


def simple_signing_payload(digest: str, reference: str = "registry.example/team/app") -> bytes:
    """The payload cosign signs for ``digest`` (cosign's own serialization)."""
    return _canonical(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": sg.COSIGN_TYPE,
            },
            "optional": None,
        }
    )


def cosign_signature(
    digest: str,
    key: SigningKey,
    *,
    payload: bytes | None = None,
    subject: dict[str, Any] | None = None,
    extra_layers: int = 0,
) -> Artifact:
    """cosign's signature manifest for ``digest`` (see the module docstring). ``payload``
    replaces the simple signing payload (to sign something else); ``extra_layers`` adds more
    signatures by fresh keys before ours (several signers, as ``cosign sign`` twice does)."""
    signers = [SigningKey(key.kind) for _ in range(extra_layers)] + [key]
    body = payload if payload is not None else simple_signing_payload(digest)
    blobs = {_digest(body): body}
    layers = [
        {
            "mediaType": sg.SIMPLE_SIGNING,
            "size": len(body),
            "digest": _digest(body),
            "annotations": {sg.SIGNATURE_ANNOTATION: base64.b64encode(s.sign(body)).decode()},
        }
        for s in signers
    ]
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if subject is None:
        config = _canonical(
            {
                "architecture": "",
                "created": "0001-01-01T00:00:00Z",
                "history": [{"created": "0001-01-01T00:00:00Z"}],
                "os": "",
                "rootfs": {"type": "layers", "diff_ids": [_digest(body)]},
                "config": {},
            }
        )
        doc["config"] = {"mediaType": OCI_CONFIG, "size": len(config), "digest": _digest(config)}
    else:
        config = EMPTY_JSON
        doc["artifactType"] = sg.COSIGN_SIGNATURE_ARTIFACT
        doc["config"] = {"mediaType": OCI_EMPTY, "size": 2, "digest": _digest(config)}
    blobs[_digest(config)] = config
    doc["layers"] = layers
    if subject is not None:
        doc["subject"] = subject
    return Artifact(_canonical(doc), blobs)


def _referrer(
    artifact_type: str,
    layer_type: str,
    blob: bytes,
    subject: dict[str, Any],
    annotations: dict[str, str] | None = None,
    config_type: str = OCI_EMPTY,
) -> Artifact:
    config = EMPTY_JSON
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if config_type == OCI_EMPTY:
        doc["artifactType"] = artifact_type
    doc["config"] = {"mediaType": config_type, "size": len(config), "digest": _digest(config)}
    doc["layers"] = [{"mediaType": layer_type, "size": len(blob), "digest": _digest(blob)}]
    doc["subject"] = subject
    if annotations:
        doc["annotations"] = annotations
    return Artifact(_canonical(doc), {_digest(config): config, _digest(blob): blob})


def bundle_signature(digest: str, key: SigningKey, subject: dict[str, Any]) -> Artifact:
    """A Sigstore bundle referrer whose DSSE envelope (signed by ``key``) names ``digest``."""
    statement = _canonical(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "team/app", "digest": {"sha256": digest.split(":", 1)[1]}}],
            "predicateType": "https://sigstore.dev/cosign/sign/v1",
            "predicate": {},
        }
    )
    sig = key.sign(sg.pae(sg.IN_TOTO, statement))
    bundle = _canonical(
        {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": "test"}},
            "dsseEnvelope": {
                "payload": base64.b64encode(statement).decode(),
                "payloadType": sg.IN_TOTO,
                "signatures": [{"sig": base64.b64encode(sig).decode()}],
            },
        }
    )
    kind = "application/vnd.dev.sigstore.bundle.v0.3+json"
    return _referrer(kind, kind, bundle, subject)


def report_artifact(
    artifact_type: str,
    report: bytes,
    subject: dict[str, Any],
    *,
    created: str = "2026-01-01T00:00:00Z",
    layer_type: str | None = None,
    config_typed: bool = False,
) -> Artifact:
    """A scan report referrer. ``config_typed``: trivy-plugin-referrer's form (the report's
    type as the config type, no ``artifactType``, ``org.opencontainers.artifact.created``)."""
    if config_typed:
        annotations = {"org.opencontainers.artifact.created": created, "created-by": "trivy"}
        return _referrer(
            artifact_type, artifact_type, report, subject, annotations, config_type=artifact_type
        )
    annotations = {"org.opencontainers.image.created": created}
    return _referrer(artifact_type, layer_type or artifact_type, report, subject, annotations)


def trivy_report(*findings: tuple[str, str]) -> bytes:
    """A Trivy JSON report (``trivy image -f json``) listing ``(id, severity)`` findings."""
    vulns = [
        {
            "VulnerabilityID": vid,
            "PkgName": "openssl",
            "InstalledVersion": "3.0.0",
            "FixedVersion": "3.0.9",
            "Severity": severity,
        }
        for vid, severity in findings
    ]
    return _canonical(
        {
            "SchemaVersion": 2,
            "ArtifactName": "team/app",
            "ArtifactType": "container_image",
            "Results": [
                {
                    "Target": "team/app (alpine 3.18.0)",
                    "Class": "os-pkgs",
                    "Type": "alpine",
                    "Vulnerabilities": vulns,
                }
            ],
        }
    )


def descriptor(media_type: str, body: bytes) -> dict[str, Any]:
    """An OCI descriptor of ``body`` (a subject)."""
    return {"mediaType": media_type, "digest": _digest(body), "size": len(body)}


async def push_artifact(
    client: RegistryClient, repo: str, artifact: Artifact, ref: str | None = None
) -> str:
    """Push ``artifact``'s blobs, then its manifest under ``ref`` (default: its digest)."""
    for digest, data in artifact.blobs.items():
        await client.push_blob(repo, data, digest)
    return await client.push_manifest(
        repo, ref or artifact.digest, artifact.manifest, artifact.media_type
    )


async def push_cosign_signature(
    client: RegistryClient, repo: str, digest: str, key: SigningKey, **kw: Any
) -> Artifact:
    """Sign ``digest`` as ``cosign sign --key`` does and push it under the ``.sig`` tag."""
    artifact = cosign_signature(digest, key, **kw)
    await push_artifact(client, repo, artifact, sg.signature_tag(digest))
    return artifact


class MemoryRepository:
    """An :class:`~regcore.policy.evidence.ArtifactSource` over dicts (unit tests of the
    policy logic; servers provide their own sources over real storage)."""

    def __init__(self, *, referrers_api: bool = True) -> None:
        self.manifests: dict[str, bytes] = {}
        self.tags: dict[str, str] = {}
        self.blobs: dict[str, bytes] = {}
        self.referrers_api = referrers_api
        self.reads = 0

    def add(self, artifact: Artifact, tag: str | None = None) -> str:
        self.manifests[artifact.digest] = artifact.manifest
        self.blobs.update(artifact.blobs)
        if tag is not None:
            self.tags[tag] = artifact.digest
        return artifact.digest

    def add_manifest(self, body: bytes, tag: str | None = None) -> str:
        return self.add(Artifact(body, {}), tag)

    async def manifest(self, reference: str) -> FetchedManifest | None:
        self.reads += 1
        digest = reference if ":" in reference else self.tags.get(reference)
        body = self.manifests.get(digest) if digest else None
        if body is None or digest is None:
            return None
        return FetchedManifest(body, json.loads(body).get("mediaType", OCI_MANIFEST), digest)

    async def blob(self, digest: str, max_bytes: int) -> bytes | None:
        data = self.blobs.get(digest)
        return data if data is not None and len(data) <= max_bytes else None

    async def referrers(self, digest: str) -> list[dict[str, Any]] | None:
        if not self.referrers_api:
            return None
        out: list[dict[str, Any]] = []
        for d, body in sorted(self.manifests.items()):
            doc = json.loads(body)
            if (doc.get("subject") or {}).get("digest") != digest:
                continue
            entry = {
                "mediaType": doc.get("mediaType", OCI_MANIFEST),
                "digest": d,
                "size": len(body),
            }
            entry["artifactType"] = doc.get("artifactType") or doc["config"]["mediaType"]
            if doc.get("annotations"):
                entry["annotations"] = doc["annotations"]
            out.append(entry)
        return out
