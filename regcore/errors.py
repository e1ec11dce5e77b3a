"""OCI Distribution error codes: one exception per code, one envelope writer.

Every handler raises a subclass of :class:`RegistryError`; the error middleware in
:mod:`regcore.http` turns it into the spec's JSON envelope::

    {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry", "detail": ...}]}

To report several problems in one answer (every blob a manifest lacks), raise
:class:`RegistryErrors` with all of them: one envelope entry each, status and headers from the
first.

Messages and details never carry secrets (credentials, tokens, upstream signed URLs).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, ClassVar

from aiohttp import web


class RegistryError(Exception):
    """Base class. ``code``/``status``/``message`` are the spec's; ``detail`` is free-form JSON.

    ``from_upstream`` is true for an error mapped from another registry's answer (set by
    :func:`regcore.client.status.error_for`): a server relaying it (the edge) replaces the
    detail, which names upstream URLs, before it reaches its own clients.
    """

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500
    message: ClassVar[str] = "unknown error"

    def __init__(
        self,
        detail: Any = None,
        *,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        from_upstream: bool = False,
    ) -> None:
        self.detail = detail
        self.msg = message or self.message
        self.headers = dict(headers or {})
        self.from_upstream = from_upstream
        super().__init__(f"{self.code}: {self.msg}" + (f" ({detail})" if detail else ""))

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"code": self.code, "message": self.msg}
        if self.detail is not None:
            entry["detail"] = self.detail
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """The envelope entries this error contributes: just its own."""
        return [self.to_dict()]


class RegistryErrors(RegistryError):
    """Several errors answered together: one envelope entry per error, in order.

    ``status``, ``code``, ``message``, ``detail`` and ``headers`` are the first error's, so
    code that looks at a single error (metrics, HEAD answers, status mapping) sees the first;
    ``errors`` holds them all. Nested :class:`RegistryErrors` are flattened.

    Raises:
        ValueError: ``errors`` is empty.
    """

    def __init__(self, errors: Iterable[RegistryError]) -> None:
        flat: list[RegistryError] = []
        for err in errors:
            flat.extend(err.errors if isinstance(err, RegistryErrors) else (err,))
        if not flat:
            raise ValueError("RegistryErrors needs at least one error")
        self.errors: tuple[RegistryError, ...] = tuple(flat)
        first = flat[0]
        self.code = first.code  # type: ignore[misc]
        self.status = first.status  # type: ignore[misc]
        self.message = first.message  # type: ignore[misc]
        super().__init__(
            first.detail,
            message=first.msg,
            headers=first.headers,
            from_upstream=first.from_upstream,
        )
        self.args = ("; ".join(str(e) for e in flat),)

    @staticmethod
    def of(errors: Iterable[RegistryError]) -> RegistryError:
        """The single error itself when there is one (its type kept for ``except``), else a
        :class:`RegistryErrors` of all. Raises ValueError when ``errors`` is empty."""
        errs = list(errors)
        return errs[0] if len(errs) == 1 else RegistryErrors(errs)

    def entries(self) -> list[dict[str, Any]]:
        """One envelope entry per error, in order."""
        return [entry for err in self.errors for entry in err.entries()]


def _error(code: str, status: int, message: str) -> type[RegistryError]:
    cls = type(
        "".join(part.capitalize() for part in code.split("_")) + "Error",
        (RegistryError,),
        {"code": code, "status": status, "message": message, "__module__": __name__},
    )
    return cls


# The spec's codes (distribution-spec "Error Codes") plus the registry:2 extras clients know.
BlobUnknown = _error("BLOB_UNKNOWN", 404, "blob unknown to registry")
BlobUploadInvalid = _error("BLOB_UPLOAD_INVALID", 400, "blob upload invalid")
BlobUploadUnknown = _error("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry")
DigestInvalid = _error("DIGEST_INVALID", 400, "provided digest did not match uploaded content")
ManifestBlobUnknown = _error(
    "MANIFEST_BLOB_UNKNOWN", 400, "manifest references a manifest or blob unknown to registry"
)
ManifestInvalid = _error("MANIFEST_INVALID", 400, "manifest invalid")
ManifestUnknown = _error("MANIFEST_UNKNOWN", 404, "manifest unknown to registry")
NameInvalid = _error("NAME_INVALID", 400, "invalid repository name")
NameUnknown = _error("NAME_UNKNOWN", 404, "repository name not known to registry")
SizeInvalid = _error("SIZE_INVALID", 400, "provided length did not match content length")
Unauthorized = _error("UNAUTHORIZED", 401, "authentication required")
Denied = _error("DENIED", 403, "requested access to the resource is denied")
Unsupported = _error("UNSUPPORTED", 405, "the operation is unsupported")
TooManyRequests = _error("TOOMANYREQUESTS", 429, "too many requests")
TagInvalid = _error("TAG_INVALID", 400, "manifest tag did not match URI")
PaginationNumberInvalid = _error(
    "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"
)
RangeInvalid = _error("RANGE_INVALID", 416, "invalid content range")
ManifestTooLarge = _error("MANIFEST_INVALID", 413, "manifest exceeds the size limit")
# Not in the spec's table but used with the same envelope:
SizeTooLarge = _error("SIZE_INVALID", 413, "content exceeds the allowed size")
Unavailable = _error("UNAVAILABLE", 503, "service unavailable")
UpstreamUnavailable = _error("UNAVAILABLE", 502, "upstream registry unavailable")
UpstreamTimeout = _error("UNAVAILABLE", 504, "upstream registry timed out")
MethodNotAllowed = _error("UNSUPPORTED", 405, "method not allowed")
ReadOnly = _error("UNSUPPORTED", 405, "registry is in read-only mode")
Internal = _error("UNKNOWN", 500, "internal server error")


def error_body(*errors: RegistryError) -> bytes:
    """The JSON envelope for one or more errors (a :class:`RegistryErrors` adds all of its)."""
    return json.dumps({"errors": [entry for e in errors for entry in e.entries()]}).encode()


def error_response(err: RegistryError) -> web.Response:
    """Build the HTTP response for ``err`` (status, envelope, extra headers).

    A :class:`RegistryErrors` is answered with every error in the envelope and the first
    one's status and headers.
    """
    headers = {"Docker-Distribution-API-Version": "registry/2.0", **err.headers}
    return web.Response(
        status=err.status,
        body=error_body(err),
        content_type="application/json",
        headers=headers,
    )
