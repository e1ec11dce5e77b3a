"""Parse and validate OCI / Docker schema 2 manifests and indexes, exactly as pushed.

:func:`parse_manifest` never rewrites the body: the digest is of the exact bytes, and the
caller stores those bytes and :attr:`ParsedManifest.media_type` verbatim.

Rules (OCI distribution-spec v1.1, image-spec v1.1, Docker image manifest v2 schema 2):

* bodies larger than :data:`MAX_MANIFEST_BYTES` (4 MiB, the limit of registry:2 and of
  containers/image) raise :class:`ManifestTooLarge` (MANIFEST_INVALID, 413; the spec asks
  for 413 and names no code, zot answers MANIFEST_INVALID);
* the body is a UTF-8 JSON object with ``schemaVersion`` 2; schema 1 (by ``schemaVersion``
  or media type) is rejected;
* the media type: if the body has ``mediaType`` it must equal a specific ``Content-Type``
  (CVE-2021-41190); a generic or absent ``Content-Type`` (``application/json``,
  ``application/octet-stream``, none) defers to the body; with neither, ``manifests`` means
  an OCI index and ``config`` + ``layers`` an OCI image manifest;
* an image manifest must not carry ``manifests`` and an index must not carry ``config`` or
  ``layers`` (the ambiguity behind the CVE);
* every descriptor has a string ``mediaType``, a valid digest and an integer ``size >= 0``;
  ``annotations`` are string-to-string; ``platform`` has string ``architecture`` and ``os``.

Every violation raises :class:`errors.ManifestInvalid` with a ``detail`` naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from regcore import errors
from regcore import mediatypes as mt
from regcore.digest import Digest

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_DESCRIPTOR_SIZE = 2**63 - 1  # what Go clients (int64) can represent


class ManifestTooLarge(errors.ManifestInvalid):
    """MANIFEST_INVALID with status 413 (to be moved into :mod:`regcore.errors`)."""

    status = 413
    message = "manifest exceeds the size limit"


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor (also used for Docker schema 2 entries)."""

    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] = field(default_factory=dict, hash=False)
    artifact_type: str | None = None
    platform: dict[str, Any] | None = field(default=None, hash=False)
    urls: tuple[str, ...] = ()

    @property
    def is_foreign(self) -> bool:
        """A layer that lives outside the registry: foreign/non-distributable type with urls."""
        return bool(self.urls) and mt.is_foreign_layer(self.media_type)

    def to_dict(self) -> dict[str, Any]:
        """JSON form with the spec's field names; empty optional fields are omitted."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = dict(self.platform)
        return out


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    """A validated manifest or index. Equal bytes give equal objects."""

    media_type: str
    digest: Digest
    size: int
    raw: bytes
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    children: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def is_index(self) -> bool:
        return mt.is_index(self.media_type)

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Config then layers (image manifests); empty for an index."""
        return ((self.config,) if self.config is not None else ()) + self.layers

    @property
    def required_blobs(self) -> tuple[Descriptor, ...]:
        """The blobs a push must find in the registry: :attr:`blobs` minus foreign layers."""
        return tuple(d for d in self.blobs if not d.is_foreign)

    @property
    def platforms(self) -> tuple[dict[str, Any] | None, ...]:
        """``platform`` of each child, aligned with :attr:`children` (``None`` if absent)."""
        return tuple(c.platform for c in self.children)


def parse_manifest(
    body: bytes,
    content_type: str | None,
    *,
    digest_algorithm: str = "sha256",
    max_bytes: int = MAX_MANIFEST_BYTES,
) -> ParsedManifest:
    """Validate ``body`` pushed (or fetched) with ``content_type``; see the module rules.

    ``digest_algorithm`` selects the algorithm of :attr:`ParsedManifest.digest` (use the
    algorithm of the URL's digest when a manifest is pushed by digest). Raises
    :class:`ManifestTooLarge` or :class:`errors.ManifestInvalid`.
    """
    if len(body) > max_bytes:
        raise ManifestTooLarge({"size": len(body), "limit": max_bytes})
    declared = mt.normalize(content_type)
    if mt.is_schema1(declared):
        raise errors.ManifestInvalid({"reason": "schema1 not supported", "mediaType": declared})
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise errors.ManifestInvalid({"reason": f"not valid JSON: {exc}"}) from None
    if not isinstance(doc, dict):
        raise errors.ManifestInvalid({"reason": "manifest must be a JSON object"})
    version = doc.get("schemaVersion")
    if version == 1 and not isinstance(version, bool):
        raise errors.ManifestInvalid({"reason": "schema1 not supported"})
    if version != 2 or isinstance(version, bool):
        raise errors.ManifestInvalid(
            {"reason": "schemaVersion must be 2", "schemaVersion": version}
        )
    media_type = _resolve_media_type(doc, declared)
    digest = Digest.of(body, digest_algorithm)
    annotations = _annotations(doc.get("annotations"), "annotations")
    artifact_type = _optional_str(doc, "artifactType", "artifactType")
    is_oci = media_type in (mt.OCI_MANIFEST, mt.OCI_INDEX)
    subject = (
        _descriptor(doc["subject"], "subject")
        if is_oci and doc.get("subject") is not None
        else None
    )
    if mt.is_index(media_type):
        if "config" in doc or "layers" in doc:
            raise errors.ManifestInvalid({"reason": "an index must not have config or layers"})
        children = _descriptor_list(doc.get("manifests"), "manifests")
        return ParsedManifest(
            media_type=media_type,
            digest=digest,
            size=len(body),
            raw=body,
            children=children,
            subject=subject,
            artifact_type=artifact_type,
            annotations=annotations,
        )
    if "manifests" in doc:
        raise errors.ManifestInvalid({"reason": "an image manifest must not have manifests"})
    if not isinstance(doc.get("config"), dict):
        raise errors.ManifestInvalid({"reason": "config descriptor missing", "field": "config"})
    config = _descriptor(doc["config"], "config")
    layers = _descriptor_list(doc.get("layers"), "layers")
    return ParsedManifest(
        media_type=media_type,
        digest=digest,
        size=len(body),
        raw=body,
        config=config,
        layers=layers,
        subject=subject,
        annotations=annotations,
        artifact_type=artifact_type or config.media_type,
    )


def referrer_descriptor(parsed: ParsedManifest) -> dict[str, Any]:
    """The entry for ``parsed`` in a referrers response (``GET /v2/<name>/referrers/<d>``).

    ``mediaType``, ``digest``, ``size``; ``artifactType`` (the manifest's, else its config's
    media type; omitted for an index without one); ``annotations`` when non-empty.
    """
    out: dict[str, Any] = {
        "mediaType": parsed.media_type,
        "digest": str(parsed.digest),
        "size": parsed.size,
    }
    if parsed.artifact_type:
        out["artifactType"] = parsed.artifact_type
    if parsed.annotations:
        out["annotations"] = dict(parsed.annotations)
    return out


def _resolve_media_type(doc: dict[str, Any], declared: str) -> str:
    in_body = doc.get("mediaType")
    if in_body is not None and not isinstance(in_body, str):
        raise errors.ManifestInvalid({"reason": "mediaType must be a string", "field": "mediaType"})
    in_body = mt.normalize(in_body) if in_body else ""
    if mt.is_schema1(in_body):
        raise errors.ManifestInvalid({"reason": "schema1 not supported", "mediaType": in_body})
    specific = "" if declared in mt.UNSPECIFIED_TYPES else declared
    if in_body and specific and in_body != specific:
        raise errors.ManifestInvalid(
            {
                "reason": "mediaType does not match Content-Type",
                "mediaType": in_body,
                "contentType": specific,
            }
        )
    chosen = in_body or specific
    if not chosen:
        if "manifests" in doc and ("config" in doc or "layers" in doc):
            raise errors.ManifestInvalid(
                {"reason": "ambiguous manifest: both manifests and config/layers"}
            )
        if "manifests" in doc:
            chosen = mt.OCI_INDEX
        elif "config" in doc and "layers" in doc:
            chosen = mt.OCI_MANIFEST
        else:
            raise errors.ManifestInvalid({"reason": "cannot determine manifest media type"})
    if chosen not in mt.MANIFEST_TYPES:
        raise errors.ManifestInvalid(
            {"reason": "unsupported manifest media type", "mediaType": chosen}
        )
    return chosen


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _descriptor_list(value: Any, where: str) -> tuple[Descriptor, ...]:
    if not isinstance(value, list):
        raise errors.ManifestInvalid({"reason": "must be a list of descriptors", "field": where})
    return tuple(_descriptor(item, f"{where}[{i}]") for i, item in enumerate(value))


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise errors.ManifestInvalid({"reason": "descriptor must be an object", "field": where})
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise errors.ManifestInvalid(
            {"reason": "mediaType must be a non-empty string", "field": f"{where}.mediaType"}
        )
    digest_text = value.get("digest")
    try:
        digest = Digest.parse(digest_text)  # type: ignore[arg-type]
    except errors.DigestInvalid:
        raise errors.ManifestInvalid(
            {
                "reason": "invalid digest",
                "field": f"{where}.digest",
                "digest": str(digest_text)[:100],
            }
        ) from None
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_DESCRIPTOR_SIZE:
        raise errors.ManifestInvalid(
            {"reason": "size must be an integer >= 0", "field": f"{where}.size"}
        )
    urls = value.get("urls")
    if urls is not None and (
        not isinstance(urls, list) or not all(isinstance(u, str) for u in urls)
    ):
        raise errors.ManifestInvalid(
            {"reason": "urls must be a list of strings", "field": f"{where}.urls"}
        )
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        annotations=_annotations(value.get("annotations"), f"{where}.annotations"),
        artifact_type=_optional_str(value, "artifactType", f"{where}.artifactType"),
        platform=_platform(value.get("platform"), f"{where}.platform"),
        urls=tuple(urls or ()),
    )


def _annotations(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise errors.ManifestInvalid(
            {"reason": "annotations must map strings to strings", "field": where}
        )
    return dict(value)


def _platform(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise errors.ManifestInvalid({"reason": "platform must be an object", "field": where})
    for key in ("architecture", "os"):
        if not isinstance(value.get(key), str) or not value[key]:
            raise errors.ManifestInvalid(
                {"reason": f"platform.{key} must be a non-empty string", "field": where}
            )
    return dict(value)


def _optional_str(doc: dict[str, Any], key: str, where: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise errors.ManifestInvalid({"reason": f"{key} must be a string", "field": where})
    return value or None
