"""Credential redaction for text, URLs, headers and log fields: what may never be written out.

:func:`redact` masks, in free text, URL userinfo, ``Authorization:``/``Cookie:``-style header
values, ``Bearer``/``Basic`` tokens and ``password=``/``token=``-style parameters (signed-URL
signatures and credentials included) as ``***``; :func:`redact_url` masks a URL's password and
sensitive query values while keeping its shape; :func:`redact_headers` masks credential-bearing
headers; :func:`redact_query` and :func:`redact_value` do the same for a query string and a log
field. None of them has side effects; :func:`redact` is idempotent and returns text that
holds no secret unchanged.

Cost: :mod:`regcore.logging` runs these on every record and every access-log line, so
:func:`redact` first checks (without a regex) whether the text could hold any secret it masks
and returns it unchanged when not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

__all__ = [
    "MASK",
    "SENSITIVE_HEADERS",
    "SENSITIVE_PARAMS",
    "redact",
    "redact_headers",
    "redact_query",
    "redact_url",
    "redact_value",
]

MASK = "***"

SENSITIVE_PARAMS = frozenset(
    {
        "access_token",
        "token",
        "refresh_token",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "api_key",
        "apikey",
        "key",
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "auth",
        "authorization",
        "code",
    }
)
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-registry-auth"}
)

_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@:]*(?::[^/\s@]*)?@")
_AUTH_HEADER = re.compile(
    r"(?i)\b(?P<name>(?:proxy-)?authorization|x-registry-auth|cookie)(?P<sep>\"?\s*[:=]\s*\"?)"
    r"(?:(?P<scheme>bearer|basic|token)\s+)?[^\s\",;]+"
)
_SCHEME_TOKEN = re.compile(r"(?i)\b(?P<scheme>bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_PARAM = re.compile(
    r"(?i)(?P<name>\b(?:access_token|refresh_token|token|password|passwd|secret|client_secret|"
    r"api_?key|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|"
    r"x-goog-signature|x-goog-credential))(?P<sep>\"?\s*[=:]\s*\"?)[^\s&\",;]+"
)


def _may_hold_secret(text: str) -> bool:
    """False only when none of the patterns :func:`redact` applies can match ``text``.

    Each pattern needs ``://``, a header name (``authorization``, ``x-registry-auth``,
    ``cookie``), a scheme (``bearer``, ``basic``) or a parameter name (all contain ``token``,
    ``passw``, ``secret``, ``apikey``/``api_key``, ``sig`` or ``credential``), matched without
    case. For ASCII text ``str.lower`` is exactly that case folding; other text (where regex
    case folding also maps e.g. U+017F to ``s``) is always treated as a candidate.
    """
    if not text.isascii():
        return True
    t = text.lower()
    return (
        "://" in t
        or "auth" in t
        or "cookie" in t
        or "bearer" in t
        or "basic" in t
        or "token" in t
        or "passw" in t
        or "secret" in t
        or "apikey" in t
        or "api_key" in t
        or "sig" in t
        or "credential" in t
    )


def redact(text: str) -> str:
    """Mask credentials in free text: URL userinfo, auth headers, tokens, secret parameters.

    Idempotent; text without secrets is returned unchanged (cheaply, see :func:`_may_hold_secret`).
    """
    if not text or not _may_hold_secret(text):
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _AUTH_HEADER.sub(
        lambda m: f"{m['name']}{m['sep']}{m['scheme'] + ' ' if m['scheme'] else ''}{MASK}", text
    )
    text = _SCHEME_TOKEN.sub(lambda m: f"{m['scheme']} {MASK}", text)
    return _PARAM.sub(lambda m: f"{m['name']}{m['sep']}{MASK}", text)


def redact_url(url: str) -> str:
    """``url`` without userinfo password and with sensitive query values masked.

    ``https://u:p@h/x?token=abc&n=1`` -> ``https://u:***@h/x?token=***&n=1``. Input that does not
    parse as a URL goes through :func:`redact` instead.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_pw, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if has_pw else f"{MASK}@{hostport}"
    query = redact_query(parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_query(query: str) -> str:
    """A URL query string with the values of :data:`SENSITIVE_PARAMS` masked (other pairs kept,
    re-encoded); returned unchanged when it has none of them."""
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k.lower() in SENSITIVE_PARAMS for k, _ in pairs):
        return query
    return "&".join(
        f"{quote(k, safe='')}={MASK if k.lower() in SENSITIVE_PARAMS else quote(v, safe='')}"
        for k, v in pairs
    )


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Copy of ``headers`` with credential-bearing values (Authorization, Cookie...) masked."""
    return {k: (MASK if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers.items()}


def redact_value(value: Any) -> Any:
    """A log field through :func:`redact`: strings redacted, mappings copied with credential
    header values masked and other values redacted recursively; anything else as is."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            k: (MASK if str(k).lower() in SENSITIVE_HEADERS else redact_value(v))
            for k, v in value.items()
        }
    return value
