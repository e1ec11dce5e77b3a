"""Media types of OCI and Docker manifests, configs and layers, and ``Accept`` negotiation.

Constants are the exact strings of the OCI image spec (v1.1) and the Docker image manifest
v2 schema 2 spec. Comparison helpers normalise a header value first (parameters dropped,
lower-cased), so ``application/vnd.oci.image.manifest.v1+json; charset=utf-8`` counts as the
OCI manifest type.

Negotiation of a stored manifest against a client's ``Accept``, the same for the origin
(``origin/manifests.py``) and the edge (``edge/negotiation.py``): :func:`negotiate`,
:func:`find_platform_child` and :func:`check_platform_child` are distribution's
``GetManifest`` rules for a client that names a manifest type (a Docker manifest list asked
for by tag by a client that takes no lists is answered with its linux/amd64 child,
:data:`DEFAULT_PLATFORM`; an OCI manifest or index the client did not list is 404
MANIFEST_UNKNOWN; nothing is narrowed by digest). Documented differences:

* a client that names no manifest type at all (no ``Accept``, only ``application/json``) or
  lists ``*/*``/``application/*`` gets the stored manifest, whatever its type (distribution
  404s OCI content and narrows a Docker list for it);
* manifests are never converted: distribution 2.8 (Debian's ``docker-registry``) rewrites a
  Docker schema 2 manifest asked for by tag, or the schema 2 child a list is narrowed to,
  into a signed schema 1 manifest (another digest) for a client that does not list the
  schema 2 type. Quayside does what distribution 3 does: it serves that schema 2 manifest as
  it is, and refuses such a narrowed child with 400 MANIFEST_INVALID ("Schema 2 manifest not
  supported by client").

:func:`acceptable` / :func:`require_acceptable` are the plain type check (the stored type,
a wildcard, or no manifest type listed) with distribution's 404 message; :func:`upstream_accept`
builds the ``Accept`` sent upstream for a client.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from regcore import errors
from regcore.digest import Digest

# --- OCI image spec -----------------------------------------------------------------------
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_DESCRIPTOR = "application/vnd.oci.descriptor.v1+json"
OCI_LAYOUT_HEADER = "application/vnd.oci.layout.header.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
# Deprecated in image-spec 1.1 but still found in the wild; layers that may carry ``urls``.
OCI_LAYER_NONDIST_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
# The artifact manifest of the 1.1 release candidates; dropped from the final spec. Not
# accepted on push (it is not in MANIFEST_TYPES).
OCI_ARTIFACT_MANIFEST = "application/vnd.oci.artifact.manifest.v1+json"

# --- Docker image manifest v2 schema 2 ----------------------------------------------------
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_PLUGIN_CONFIG = "application/vnd.docker.plugin.v1+json"

# --- Docker schema 1 (rejected on push with MANIFEST_INVALID) ----------------------------
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# --- Generic ------------------------------------------------------------------------------
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"

IMAGE_MANIFEST_TYPES: frozenset[str] = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES: frozenset[str] = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES: frozenset[str] = IMAGE_MANIFEST_TYPES | INDEX_TYPES
"""Every manifest media type this registry stores and serves."""
SCHEMA1_TYPES: frozenset[str] = frozenset({DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED})
FOREIGN_LAYER_TYPES: frozenset[str] = frozenset(
    {DOCKER_FOREIGN_LAYER, OCI_LAYER_NONDIST_TAR, OCI_LAYER_NONDIST_GZIP, OCI_LAYER_NONDIST_ZSTD}
)
"""Layers that may live outside the registry (their descriptor carries ``urls``)."""
UNSPECIFIED_TYPES: frozenset[str] = frozenset({"", JSON, OCTET_STREAM, "text/plain", "*/*"})
"""Content-Type values that say nothing about which manifest format a body is."""

DEFAULT_ACCEPT: tuple[str, ...] = (
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
)
"""What a client that can handle every served manifest type sends (in preference order)."""

_WILDCARDS = frozenset({"*/*", "application/*"})


def normalize(media_type: str | None) -> str:
    """``"Application/JSON; charset=utf-8 "`` -> ``"application/json"``; ``None`` -> ``""``."""
    if not media_type:
        return ""
    return media_type.split(";", 1)[0].strip().lower()


def is_index(media_type: str | None) -> bool:
    """True for an OCI image index or a Docker manifest list."""
    return normalize(media_type) in INDEX_TYPES


def is_manifest(media_type: str | None) -> bool:
    """True for an *image* manifest (OCI image manifest or Docker schema 2), not an index."""
    return normalize(media_type) in IMAGE_MANIFEST_TYPES


def is_manifest_type(media_type: str | None) -> bool:
    """True for any manifest type we store: image manifest or index, OCI or Docker."""
    return normalize(media_type) in MANIFEST_TYPES


def is_schema1(media_type: str | None) -> bool:
    return normalize(media_type) in SCHEMA1_TYPES


def is_foreign_layer(media_type: str | None) -> bool:
    """True for Docker foreign layers and OCI non-distributable layers."""
    return normalize(media_type) in FOREIGN_LAYER_TYPES


def parse_accept(header_values: Iterable[str]) -> list[str]:
    """Flatten one or more ``Accept`` header values into normalised media types.

    Handles comma-separated lists and repeated headers; parameters are dropped and q-values
    are not used for ordering (registries serve the one stored type), except that an entry
    with ``q=0`` ("not acceptable", RFC 9110) is left out. Order of first appearance is kept,
    duplicates are removed. Never raises: unparseable pieces are skipped.
    """
    seen: dict[str, None] = {}
    for value in header_values:
        if not value:
            continue
        for item in value.split(","):
            media_type, *params = (part.strip() for part in item.split(";"))
            media_type = media_type.lower()
            if not media_type or "/" not in media_type:
                continue
            if any(_is_zero_q(param) for param in params):
                continue
            seen.setdefault(media_type, None)
    return list(seen)


def _is_zero_q(param: str) -> bool:
    key, _, value = param.partition("=")
    if key.strip().lower() != "q":
        return False
    try:
        return float(value.strip()) == 0.0
    except ValueError:
        return False


def acceptable(media_type: str, accepted: Iterable[str]) -> bool:
    """May a manifest of ``media_type`` be served as it is to a client that sent ``accepted``?

    ``accepted`` is the output of :func:`parse_accept`. Rules:

    * an empty list (no ``Accept`` header) -> yes: the client gets the stored manifest;
    * the type itself, ``*/*`` or ``application/*`` listed -> yes;
    * the list names no manifest type at all (e.g. only ``application/json``) -> yes, as if
      there were no header (old clients);
    * otherwise (the client listed manifest types, and not this one) -> no.

    This is the strict type check only; the servers answer with :func:`negotiate`, which
    applies it to OCI types (404 through :func:`require_acceptable`), serves Docker schema 2
    manifests whatever was listed and narrows a Docker list asked for by tag.
    """
    wanted = normalize(media_type)
    listed = [normalize(a) for a in accepted]
    if not listed or wanted in listed:
        return True
    if any(a in _WILDCARDS for a in listed):
        return True
    return not any(a in MANIFEST_TYPES or a in SCHEMA1_TYPES for a in listed)


def require_acceptable(media_type: str, accepted: Iterable[str]) -> None:
    """Raise :class:`errors.ManifestUnknown` (404) when :func:`acceptable` says no.

    The message is distribution's (``OCI manifest found, but accept header does not support
    OCI manifests``, and the like for other types) so users can search for it.
    """
    accepted = list(accepted)
    if acceptable(media_type, accepted):
        return
    wanted = normalize(media_type)
    one, many = _LABELS.get(wanted, (wanted, wanted))
    raise errors.ManifestUnknown(
        {"mediaType": wanted, "accept": accepted[:10]},
        message=f"{one} found, but accept header does not support {many}",
    )


_LABELS: dict[str, tuple[str, str]] = {
    OCI_MANIFEST: ("OCI manifest", "OCI manifests"),
    OCI_INDEX: ("OCI index", "OCI indexes"),
    DOCKER_MANIFEST: ("Docker schema2 manifest", "Docker schema2 manifests"),
    DOCKER_MANIFEST_LIST: ("Docker manifest list", "Docker manifest lists"),
}


def upstream_accept(accepted: Iterable[str]) -> str:
    """The ``Accept`` value to send upstream on behalf of a client that sent ``accepted``.

    A client that named manifest types has them forwarded (wildcards kept, other types
    dropped); a client that named none (no header, ``*/*``, ``application/json``) is served
    whatever is stored, so every type in :data:`DEFAULT_ACCEPT` is asked for (registry:2
    answers 404 for an OCI manifest unless the OCI type is listed). A client that listed
    only schema 1 types gets the default list too; the edge then answers with
    :func:`require_acceptable` against the client's own list.
    """
    listed = [normalize(a) for a in accepted]
    manifest_types = [a for a in listed if a in MANIFEST_TYPES]
    if not manifest_types or any(a in _WILDCARDS for a in listed):
        return ", ".join(DEFAULT_ACCEPT)
    return ", ".join(manifest_types)


# --- negotiation of a stored manifest (distribution's GetManifest), origin and edge -------
Verdict = Literal["serve", "narrow"]
DEFAULT_PLATFORM: tuple[str, str] = ("linux", "amd64")
"""(os, architecture) of the child distribution serves for a list to a client taking no lists."""


def negotiate(media_type: str, accepted: Iterable[str], *, by_tag: bool) -> Verdict:
    """What to answer a client that sent ``accepted`` (:func:`parse_accept`) for a stored
    manifest of ``media_type``, asked for by tag (``by_tag``) or by digest.

    ``"serve"``: the stored manifest as it is; ``"narrow"``: the stored manifest is a Docker
    manifest list, asked for by tag by a client that does not list the manifest-list type:
    answer with its :data:`DEFAULT_PLATFORM` child instead (then
    :func:`check_platform_child`); raises :class:`errors.ManifestUnknown` (404, distribution's
    message) for an OCI manifest or index the client did not list.

    The rules of distribution's ``registry/handlers/manifests.go`` for a client that lists a
    manifest type (schema 1 types count): an OCI manifest needs the OCI manifest type listed,
    an OCI index the OCI index type (by tag and by digest; an index is never narrowed); a
    Docker manifest list by digest and a Docker schema 2 manifest (or any other type) are
    served whatever the client listed (distribution 2.8 would convert that schema 2 manifest
    by tag to schema 1; nothing is converted here). Differences (module docstring): a client
    that names no manifest type (no ``Accept``, only ``application/json``) or lists ``*/*`` /
    ``application/*`` gets the stored manifest whatever its type (distribution would 404 OCI
    content and narrow a list); ``q=0`` entries are not listed.
    """
    wanted = normalize(media_type)
    listed = [normalize(a) for a in accepted]
    if not any(a in MANIFEST_TYPES or a in SCHEMA1_TYPES for a in listed):
        return "serve"
    if any(a in _WILDCARDS for a in listed):
        return "serve"
    if wanted in (OCI_MANIFEST, OCI_INDEX) and wanted not in listed:
        require_acceptable(wanted, listed)
    if wanted == DOCKER_MANIFEST_LIST and by_tag and wanted not in listed:
        return "narrow"
    return "serve"


def check_platform_child(media_type: str, accepted: Iterable[str]) -> None:
    """Raise :class:`errors.ManifestInvalid` (400, distribution's message) when the child a
    Docker list was narrowed to (:func:`negotiate` said ``"narrow"``) is a schema 2 manifest
    and the client did not list the schema 2 type (distribution 3; 2.8 converts it to
    schema 1 instead); any other child is served."""
    listed = [normalize(a) for a in accepted]
    if normalize(media_type) == DOCKER_MANIFEST and DOCKER_MANIFEST not in listed:
        raise errors.ManifestInvalid(
            {"mediaType": DOCKER_MANIFEST}, message="Schema 2 manifest not supported by client"
        )


@dataclass(frozen=True, slots=True)
class PlatformChild:
    """The entry of a manifest list chosen for a client that takes no lists."""

    digest: str
    media_type: str
    size: int


def find_platform_child(
    body: bytes, platform: tuple[str, str] = DEFAULT_PLATFORM
) -> PlatformChild | None:
    """The first entry of the list ``body`` whose ``platform`` is ``(os, architecture)``
    (variant and features ignored, as distribution does), or ``None``: none matches, or the
    body is not a list of well-formed descriptors. Never raises."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return None
    os_name, arch = platform
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        plat = entry.get("platform")
        if not isinstance(plat, dict):
            continue
        if plat.get("os") != os_name or plat.get("architecture") != arch:
            continue
        try:
            digest = str(Digest.parse(str(entry.get("digest"))))
            size = int(entry.get("size", -1))
        except (errors.RegistryError, TypeError, ValueError):
            return None
        return PlatformChild(digest, normalize(str(entry.get("mediaType", ""))), size)
    return None
