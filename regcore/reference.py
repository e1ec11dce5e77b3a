"""Repository names, tags and manifest references, by the OCI Distribution Spec's grammar.

* A repository name is one or more path components separated by ``/``; each component
  matches ``[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*`` (distribution-spec v1.1). The whole name is at
  most :data:`NAME_MAX_LENGTH` (255) characters, the limit registry:2 enforces.
* A tag matches ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}``.
* The ``<reference>`` of ``/v2/<name>/manifests/<reference>`` is a digest when it contains
  ``:`` (a tag never does), otherwise a tag.

Errors: an invalid name raises :class:`errors.NameInvalid` (400 NAME_INVALID); an invalid tag
raises :class:`errors.TagInvalid` (400 TAG_INVALID); an invalid digest raises
:class:`errors.DigestInvalid` (400 DIGEST_INVALID). The spec lists TAG_INVALID among the
Docker-era codes a client MAY meet; we use it for any malformed tag in a manifest URL or a
tag list query, because it names the problem precisely and is a 400 like MANIFEST_INVALID.
A GET/HEAD handler that prefers the spec's plain "not found" may catch it and raise
MANIFEST_UNKNOWN instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from regcore import errors
from regcore.digest import Digest

NAME_MAX_LENGTH = 255
TAG_MAX_LENGTH = 128
DOCKER_HUB = "docker.io"
DOCKER_HUB_OFFICIAL_PREFIX = "library/"

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
# A registry host: DNS-ish labels or an IPv6 literal, with an optional port.
_HOST_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
)
# Percent-encoded '/', '.', '\\' or '%' in a raw (undecoded) request path.
_ENCODED_RE = re.compile(r"%(?:2f|2e|5c|25|00)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Tag:
    """A validated tag. ``str(tag)`` is the tag itself."""

    name: str

    def __str__(self) -> str:
        return self.name


def is_valid_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and len(name) <= NAME_MAX_LENGTH
        and NAME_RE.fullmatch(name) is not None
    )


def is_valid_tag(tag: object) -> bool:
    return isinstance(tag, str) and TAG_RE.fullmatch(tag) is not None


def validate_name(name: str) -> str:
    """Return ``name`` unchanged if it is a valid repository name.

    Raises :class:`errors.NameInvalid` whose ``detail`` is ``{"name": <clipped>, "reason":
    <why>}``; reasons name the common mistakes (empty, too long, empty component, ``..``,
    percent-encoding, upper case, separator at an edge) before falling back to "grammar".
    """
    if is_valid_name(name):
        return name
    raise errors.NameInvalid({"name": _clip(name), "reason": _name_reason(name)})


def _name_reason(name: object) -> str:
    if not isinstance(name, str) or not name:
        return "empty"
    if len(name) > NAME_MAX_LENGTH:
        return f"longer than {NAME_MAX_LENGTH} characters"
    if "%" in name:
        return "percent-encoded characters are not allowed"
    components = name.split("/")
    if any(c == "" for c in components):
        return "empty path component"
    if any(c in {".", ".."} for c in components) or ".." in name:
        return "'.' and '..' are not allowed as components or separators"
    if name != name.lower():
        return "upper-case characters are not allowed"
    if any(c[0] in "._-" or c[-1] in "._-" for c in components):
        return "a component must start and end with [a-z0-9]"
    return "does not match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*"


def validate_tag(tag: str) -> str:
    """Return ``tag`` unchanged if valid; raises :class:`errors.TagInvalid` otherwise."""
    if is_valid_tag(tag):
        return tag
    raise errors.TagInvalid({"tag": _clip(tag)}, message="invalid tag")


def parse_reference(reference: str) -> Tag | Digest:
    """Classify the ``<reference>`` of a manifest URL.

    Contains ``:`` -> parsed as a digest (raises :class:`errors.DigestInvalid` if bad);
    otherwise validated as a tag (raises :class:`errors.TagInvalid` if bad).
    """
    if not isinstance(reference, str) or not reference:
        raise errors.TagInvalid({"tag": ""}, message="invalid tag")
    if ":" in reference:
        return Digest.parse(reference)
    return Tag(validate_tag(reference))


def check_raw_path(raw_path: str) -> None:
    """Reject request paths that could smuggle a different name past routing.

    ``raw_path`` is the undecoded path (aiohttp ``request.raw_path``), before any router or
    proxy collapsed ``//``, resolved ``..`` or decoded ``%2F``. Raises
    :class:`errors.NameInvalid` for percent-encoded ``/``, ``.``, ``\\``, ``%`` or NUL, for
    empty segments (``//``), ``.``/``..`` segments, backslashes and NUL. The query string, if
    present, is ignored.
    """
    path = raw_path.split("?", 1)[0]
    if "\x00" in path:
        raise errors.NameInvalid({"path": _clip(path), "reason": "NUL in path"})
    if _ENCODED_RE.search(path):
        raise errors.NameInvalid({"path": _clip(path), "reason": "percent-encoded separator"})
    if "\\" in path:
        raise errors.NameInvalid({"path": _clip(path), "reason": "backslash in path"})
    segments = path.split("/")
    inner = segments[1:-1] if len(segments) > 2 else []
    if any(s == "" for s in inner):
        raise errors.NameInvalid({"path": _clip(path), "reason": "empty path component"})
    if any(s in {".", ".."} for s in segments):
        raise errors.NameInvalid({"path": _clip(path), "reason": "dot segment in path"})


def normalize_docker_hub(name: str) -> str:
    """Docker Hub's official images live under ``library/``: ``alpine`` -> ``library/alpine``.

    Names with a ``/`` are returned unchanged. The result is validated (raises
    :class:`errors.NameInvalid`).
    """
    if "/" not in name:
        name = DOCKER_HUB_OFFICIAL_PREFIX + name
    return validate_name(name)


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A client-side image reference such as ``localhost:5000/team/app:1.0@sha256:...``."""

    registry: str
    name: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def reference(self) -> str:
        """What goes into ``/v2/<name>/manifests/<reference>``: the digest if any, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.name}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def split_image_ref(ref: str, *, default_registry: str = DOCKER_HUB) -> ImageRef:
    """Split ``[host[:port]/]name[:tag][@digest]`` the way docker does.

    The first component is a registry host when it contains ``.`` or ``:``, is
    ``localhost``, or has upper-case letters; otherwise the registry is
    ``default_registry``. For Docker Hub (``docker.io``, ``index.docker.io``,
    ``registry-1.docker.io``) one-segment names get ``library/``. No tag and no digest leaves
    both ``None`` (:attr:`ImageRef.reference` then says ``latest``).

    Raises :class:`errors.NameInvalid`, :class:`errors.TagInvalid` or
    :class:`errors.DigestInvalid`.
    """
    if not isinstance(ref, str) or not ref:
        raise errors.NameInvalid({"name": "", "reason": "empty"})
    rest, digest = ref, None
    if "@" in rest:
        rest, _, digest_text = rest.partition("@")
        digest = Digest.parse(digest_text)
    registry = default_registry
    first, sep, remainder = rest.partition("/")
    if sep and (("." in first or ":" in first) or first == "localhost" or first != first.lower()):
        if not _HOST_RE.fullmatch(first):
            raise errors.NameInvalid({"name": _clip(ref), "reason": "invalid registry host"})
        registry, rest = first, remainder
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], validate_tag(rest[colon + 1 :])
    if registry in {DOCKER_HUB, "index.docker.io", "registry-1.docker.io"}:
        name = normalize_docker_hub(rest)
    else:
        name = validate_name(rest)
    return ImageRef(registry=registry, name=name, tag=tag, digest=digest)


def _clip(value: object, limit: int = 100) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."
