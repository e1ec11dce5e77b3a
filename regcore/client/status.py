"""Upstream HTTP answers → :mod:`regcore.errors` exceptions (the client's only error vocabulary).

The mapping, for a response that is not what the operation expected:

====================  ==========================================================
401                   :class:`errors.Unauthorized` (only after auth was attempted)
403                   :class:`errors.Denied`
404                   ``kind`` decides: blob → BlobUnknown, manifest → ManifestUnknown,
                      otherwise the upstream's envelope code, else NameUnknown
405                   :class:`errors.Unsupported`
416                   :class:`errors.RangeInvalid`
429                   :class:`errors.TooManyRequests` with ``Retry-After`` kept in
                      ``err.headers``
5xx                   :class:`errors.UpstreamUnavailable`
other 4xx             the upstream's envelope code when we know it (DIGEST_INVALID,
                      MANIFEST_INVALID, ...), else the same 4xx status with the upstream's
                      code (or UNKNOWN): a refusal stays a refusal, never a 502
====================  ==========================================================

Details name the method, the upstream origin and path and the status; never credentials,
tokens or query strings (signed URLs carry their signature there). :func:`tls_failure` words a
failed TLS handshake (an untrusted certificate, a refused client certificate).
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from yarl import URL

from regcore import errors

Kind = Literal["blob", "manifest", "tags", "referrers", "upload", "catalog", "token", "other"]


class DigestMismatch(errors.UpstreamUnavailable):
    """Upstream content does not match the digest it was asked for or announced (502)."""

    message = "upstream content does not match its digest"


class BlobStreamBroken(errors.UpstreamUnavailable):
    """A blob stream broke and could not be resumed (too many resumes, bad ``Range`` answer)."""

    message = "upstream blob stream broke"


_ENVELOPE_CODES: dict[str, type[errors.RegistryError]] = {
    "BLOB_UNKNOWN": errors.BlobUnknown,
    "BLOB_UPLOAD_INVALID": errors.BlobUploadInvalid,
    "BLOB_UPLOAD_UNKNOWN": errors.BlobUploadUnknown,
    "DIGEST_INVALID": errors.DigestInvalid,
    "MANIFEST_BLOB_UNKNOWN": errors.ManifestBlobUnknown,
    "MANIFEST_INVALID": errors.ManifestInvalid,
    "MANIFEST_UNKNOWN": errors.ManifestUnknown,
    "NAME_INVALID": errors.NameInvalid,
    "NAME_UNKNOWN": errors.NameUnknown,
    "SIZE_INVALID": errors.SizeInvalid,
    "TAG_INVALID": errors.TagInvalid,
    "PAGINATION_NUMBER_INVALID": errors.PaginationNumberInvalid,
    "UNSUPPORTED": errors.Unsupported,
}


_CODE_RE = re.compile(r"[A-Z][A-Z_]{0,63}")


def redact(url: URL) -> str:
    """``scheme://host[:port]/path`` without user info, query or fragment."""
    try:
        return str(url.with_user(None).with_query(None).with_fragment(None))
    except ValueError:  # relative URL
        return url.path


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse ``Retry-After`` (delta seconds or an HTTP date) into seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def envelope_code(body: bytes) -> tuple[str | None, str | None]:
    """The first ``(code, message)`` of an OCI error envelope, or ``(None, None)``."""
    try:
        doc = json.loads(body)
        first = doc["errors"][0]
        code, message = first.get("code"), first.get("message")
        return (
            code if isinstance(code, str) else None,
            message if isinstance(message, str) else None,
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None, None


def error_for(
    status: int,
    kind: Kind,
    *,
    method: str,
    url: URL,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> errors.RegistryError:
    """The exception for an unexpected upstream ``status`` (see the module docstring).

    The error's :attr:`~regcore.errors.RegistryError.from_upstream` is set, so a server relaying
    it (the edge) can replace the detail, which names upstream URLs, before it reaches its own
    clients.
    """
    err = _error_for(status, kind, method=method, url=url, headers=headers, body=body)
    err.from_upstream = True
    return err


def _error_for(
    status: int,
    kind: Kind,
    *,
    method: str,
    url: URL,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> errors.RegistryError:
    code, upstream_msg = envelope_code(body) if body else (None, None)
    detail = f"{method} {redact(url)} answered {status}"
    if code:
        detail += f" {code}"
        if upstream_msg:
            detail += f": {upstream_msg[:200]}"
    if status == 401:
        return errors.Unauthorized(detail)
    if status == 403:
        return errors.Denied(detail)
    if status == 404:
        if kind == "blob":
            return errors.BlobUnknown(detail)
        if kind == "manifest":
            return errors.ManifestUnknown(detail)
        if kind == "upload":
            return errors.BlobUploadUnknown(detail)
        cls = _ENVELOPE_CODES.get(code or "", errors.NameUnknown)
        return cls(detail) if cls.status == 404 else errors.NameUnknown(detail)
    if status == 405:
        return errors.Unsupported(detail)
    if status == 416:
        return errors.RangeInvalid(detail)
    if status == 429:
        kept = {}
        if headers is not None and headers.get("Retry-After"):
            kept["Retry-After"] = headers["Retry-After"]
        return errors.TooManyRequests(detail, headers=kept)
    if status >= 500:
        return errors.UpstreamUnavailable(detail)
    cls = _ENVELOPE_CODES.get(code or "")
    if cls is not None and 400 <= status < 500:
        return cls(detail)
    if 400 <= status < 500:  # refused, e.g. the client's own bad input passed on: stays 4xx
        return _refused(status, code, detail)
    return errors.UpstreamUnavailable(f"{detail} (unexpected)")


def _refused(status: int, code: str | None, detail: str) -> errors.RegistryError:
    """A 4xx whose code has no class here: the upstream's status, and its code when it has
    the spec's form (uppercase letters and underscores), else ``UNKNOWN``."""
    err = errors.RegistryError(detail, message="the upstream registry refused the request")
    err.status = status  # type: ignore[misc]
    err.code = code if code and _CODE_RE.fullmatch(code) else "UNKNOWN"  # type: ignore[misc]
    return err


def tls_failure(exc: aiohttp.ClientSSLError) -> str:
    """What went wrong in a TLS handshake, in OpenSSL's words (no secrets in there)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause: Any = exc.certificate_error
        reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None)
        return (
            f"TLS certificate of {exc.host}:{exc.port} not accepted "
            f"(certificate verify failed: {reason or cause})"
        )
    cause = getattr(exc, "os_error", None) or exc
    reason = getattr(cause, "reason", None) or str(cause)
    return f"TLS handshake with {exc.host}:{exc.port} failed: {reason}"
