"""Image signatures as the tools store them, parsed into what a key must have signed.

Formats (all found next to the image in the same repository):

- **cosign** (``cosign sign --key``) and **containers/image sigstore attachments** (what
  podman/skopeo write with ``--sign-by-sigstore-private-key``): an image manifest tagged
  :func:`signature_tag` (``sha256-<hex>.sig``) whose layers have media type
  :data:`SIMPLE_SIGNING`; each layer blob is a *simple signing payload* and the layer's
  annotation :data:`SIGNATURE_ANNOTATION` holds the base64 signature over the payload bytes.
  The same manifest with a ``subject`` (cosign's OCI 1.1 mode, artifactType
  :data:`COSIGN_SIGNATURE_ARTIFACT`) is found through the referrers API instead.
- **Sigstore bundles** (cosign 3's default, artifactType :data:`BUNDLE_TYPES`): a referrer
  whose layer blob is a bundle JSON holding either a DSSE envelope (an in-toto statement whose
  ``subject`` lists the image digest; the signature covers the DSSE pre-authentication
  encoding) or a ``messageSignature`` over the manifest bytes.
- **notation** (artifactType :data:`NOTATION_SIGNATURE`): recognized and reported, not
  verified (X.509 trust stores are not configured here).

A simple signing payload counts for digest ``D`` only when ``critical.type`` is
:data:`COSIGN_TYPE` and ``critical.image.docker-manifest-digest`` equals ``D`` (the key is
matched case-insensitively, as Go's JSON decoder does). :func:`check_payload` says why not.
Nothing here fetches or verifies: :class:`SignedMessage` is what a key must have signed.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BUNDLE_TYPES",
    "COSIGN_SIGNATURE_ARTIFACT",
    "COSIGN_TYPE",
    "DSSE_ENVELOPE",
    "IN_TOTO",
    "NOTATION_SIGNATURE",
    "SIGNATURE_ANNOTATION",
    "SIMPLE_SIGNING",
    "SignedMessage",
    "bundle_message",
    "check_payload",
    "pae",
    "signature_tag",
    "simple_signing_layers",
]

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_SIGNATURE_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
COSIGN_TYPE = "cosign container image signature"
BUNDLE_TYPES = frozenset(
    {
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
    }
)
NOTATION_SIGNATURE = "application/vnd.cncf.notary.signature"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
MAX_PAYLOAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """Bytes some key signed (``message``) and the signatures over them, with where they
    were found (``origin``, for messages: ``tag sha256-….sig layer 0``)."""

    message: bytes
    signatures: tuple[bytes, ...]
    origin: str


def signature_tag(digest: str) -> str:
    """cosign's tag for the signatures of ``digest``: ``sha256:abc`` -> ``sha256-abc.sig``."""
    return digest.replace(":", "-", 1) + ".sig"


def _b64(value: Any) -> bytes | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def simple_signing_layers(doc: Any) -> list[tuple[str, int, bytes]]:
    """``(payload digest, payload size, signature)`` of each simple signing layer of a cosign
    signature manifest ``doc`` (parsed JSON) that carries a decodable signature annotation."""
    out: list[tuple[str, int, bytes]] = []
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        return out
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        annotations = layer.get("annotations")
        sig = _b64(annotations.get(SIGNATURE_ANNOTATION)) if isinstance(annotations, dict) else None
        digest, size = layer.get("digest"), layer.get("size")
        if sig is None or not isinstance(digest, str) or not isinstance(size, int):
            continue
        if 0 <= size <= MAX_PAYLOAD_BYTES:
            out.append((digest, size, sig))
    return out


def _get_ci(obj: Any, key: str) -> Any:
    """``obj[key]`` matching the key case-insensitively (Go's encoding/json does)."""
    if not isinstance(obj, dict):
        return None
    if key in obj:
        return obj[key]
    lowered = key.lower()
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == lowered:
            return v
    return None


def check_payload(payload: bytes, digest: str) -> str | None:
    """``None`` when ``payload`` is a cosign simple signing payload for ``digest``, else why
    not (a short phrase for messages)."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return "payload is not JSON"
    critical = _get_ci(doc, "critical")
    if not isinstance(critical, dict):
        return "payload has no 'critical' section"
    kind = _get_ci(critical, "type")
    if kind != COSIGN_TYPE:
        return f"payload type is {str(kind)[:60]!r}, not {COSIGN_TYPE!r}"
    named = _get_ci(_get_ci(critical, "image"), "docker-manifest-digest")
    if named != digest:
        return f"payload names {str(named)[:80]}, not {digest}"
    return None


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature covers."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def bundle_message(
    bundle: bytes, digest: str, manifest: bytes, origin: str
) -> tuple[SignedMessage | None, str | None]:
    """The signed message of a Sigstore bundle for image ``digest`` (``manifest`` are the
    image's manifest bytes), or ``(None, why not)``.

    DSSE: the envelope's payload must be an in-toto statement with ``digest`` among its
    subjects; the message is the PAE of the envelope. ``messageSignature``: the bundle's
    ``messageDigest`` must be the image digest; the message is the manifest bytes.
    """
    try:
        doc = json.loads(bundle)
    except (ValueError, RecursionError):
        return None, "bundle is not JSON"
    if not isinstance(doc, dict):
        return None, "bundle is not a JSON object"
    algorithm, _, hexdigest = digest.partition(":")
    envelope = doc.get("dsseEnvelope")
    if isinstance(envelope, dict):
        payload = _b64(envelope.get("payload"))
        payload_type = envelope.get("payloadType")
        if payload is None or not isinstance(payload_type, str):
            return None, "DSSE envelope without payload"
        if payload_type != IN_TOTO:
            return None, f"DSSE payload type {payload_type[:60]!r} is not in-toto"
        if not _statement_names(payload, algorithm, hexdigest):
            return None, f"in-toto statement does not name {digest}"
        sigs = envelope.get("signatures")
        found = (
            tuple(
                s
                for s in (_b64(x.get("sig")) for x in sigs if isinstance(x, dict))
                if s is not None
            )
            if isinstance(sigs, list)
            else ()
        )
        return SignedMessage(pae(payload_type, payload), found, origin), None
    message = doc.get("messageSignature")
    if isinstance(message, dict):
        md = message.get("messageDigest")
        named = _b64(md.get("digest")) if isinstance(md, dict) else None
        if algorithm != "sha256" or named is None or named.hex() != hexdigest:
            return None, f"message digest is not {digest}"
        sig = _b64(message.get("signature"))
        return SignedMessage(manifest, (sig,) if sig else (), origin), None
    return None, "bundle has neither dsseEnvelope nor messageSignature"


def _statement_names(payload: bytes, algorithm: str, hexdigest: str) -> bool:
    try:
        statement = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    subjects = statement.get("subject") if isinstance(statement, dict) else None
    if not isinstance(subjects, list):
        return False
    for subject in subjects:
        digests = subject.get("digest") if isinstance(subject, dict) else None
        if isinstance(digests, dict) and digests.get(algorithm) == hexdigest:
            return True
    return False
