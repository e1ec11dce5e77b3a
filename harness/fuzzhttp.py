"""Raw HTTP and the invariants the property-based tests check on every answer.

:func:`send` makes one request with :mod:`http.client` exactly as given (the path is sent as
is: percent-escapes, odd characters and all), ``Connection: close``, bounded by a timeout.
:func:`check_answer` asserts what every answer of our servers must satisfy whatever the input:
no 5xx, no Python traceback or internals in the body, and an error body (4xx with a body) that
is the OCI envelope ``{"errors": [{"code": <a spec code>, ...}]}``. :func:`store_digest` hashes
an origin's storage tree (names, sizes, small files' bytes; the ``quayside/`` state directory
with the audit trail and keys excluded) so a test can show a refused request changed nothing.

Hypothesis strategies for the usual suspects are module attributes: :data:`names`,
:data:`references`, :data:`digests`, :data:`ranges`, :data:`authorizations`, :data:`scopes`,
:data:`header_text`.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from hypothesis import strategies as st

__all__ = [
    "SPEC_CODES",
    "Answer",
    "authorizations",
    "check_answer",
    "digests",
    "header_text",
    "names",
    "path_segment",
    "ranges",
    "references",
    "scopes",
    "send",
    "store_digest",
]

# The distribution spec's error codes plus the registry:2 extras clients know.
SPEC_CODES = frozenset(
    {
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
        "TAG_INVALID",
        "PAGINATION_NUMBER_INVALID",
        "RANGE_INVALID",
        "UNAVAILABLE",
    }
)
_LEAKS = ("Traceback", 'File "/', "aiohttp/", "site-packages", "Exception:", "Error at 0x")


@dataclass(frozen=True)
class Answer:
    method: str
    path: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    sent: str = ""
    """The request as text (path, header values, body), so an echo is not taken for a leak."""


def send(
    host: str,
    port: int,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    *,
    timeout: float = 20.0,
    source: str | None = None,
) -> Answer:
    """One request, the path sent verbatim (from the loopback address ``source`` if given).
    Raises OSError/http.client errors on transport failures (a dropped connection is a
    failure of the server under test)."""
    conn = http.client.HTTPConnection(
        host, port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        sent = {k.lower() for k in (headers or {})}
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if "connection" not in sent:
            conn.putheader("Connection", "close")
        if body is not None and "content-length" not in sent:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        sent = " ".join([path, *(headers or {}).values(), (body or b"").decode("latin-1")])
        return Answer(method, path, resp.status, dict(resp.getheaders()), data, sent)
    finally:
        conn.close()


def check_answer(answer: Answer, *, oauth: bool = False) -> None:
    """Assert the invariants of the module docstring (``oauth``: the token endpoint, whose
    errors are OAuth2 JSON ``{"error": ...}`` instead of OCI envelopes)."""
    where = f"{answer.method} {answer.path[:200]!r} -> {answer.status}"
    assert answer.status < 500, where
    text = answer.body.decode("utf-8", "replace")
    for leak in _LEAKS:
        assert leak not in text or leak in answer.sent, f"{where}: {leak!r} in the body"
    if answer.status < 400 or not answer.body or answer.method == "HEAD":
        return
    doc = json.loads(answer.body)
    if oauth and isinstance(doc, dict) and "error" in doc:
        assert isinstance(doc["error"], str), where
        return
    assert isinstance(doc, dict) and isinstance(doc.get("errors"), list), where
    assert doc["errors"], where
    for entry in doc["errors"]:
        assert entry["code"] in SPEC_CODES, f"{where}: code {entry['code']!r}"
        assert isinstance(entry.get("message"), str), where


def store_digest(root: Path, exclude: tuple[str, ...] = ()) -> str:
    """A hash of the storage tree under ``root`` (``quayside/`` and the relative directories
    in ``exclude`` left out; see the module doc)."""
    h = hashlib.sha256()
    skipped = ("quayside", *exclude)
    for dirpath, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirs[:] = sorted(
            d for d in dirs if os.path.normpath(os.path.join(rel_dir, d)) not in skipped
        )
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            try:
                size = os.path.getsize(path)
                h.update(f"{os.path.relpath(path, root)}\0{size}\0".encode())
                if size <= 4096:
                    with open(path, "rb") as fh:
                        h.update(fh.read())
            except FileNotFoundError:
                continue
        h.update(f"dir:{rel_dir}:{sorted(dirs)}\n".encode())
    return h.hexdigest()


def path_segment(text: str) -> str:
    """``text`` percent-encoded for a path (``/`` kept, so it may split into components)."""
    return quote(text, safe="/")


# -- strategies ------------------------------------------------------------------------------
_NAME_CHARS = "abcz09._-/"
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=120,
)
"""Values http.client can put in a header (latin-1, no control characters)."""

names = st.one_of(
    st.text(alphabet=_NAME_CHARS, min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
    st.sampled_from(["team/app", "team/app/", "/team", "a" * 300, "team//app", "..", "team/.."]),
    st.builds(lambda a, b: f"{a}/{b}", st.sampled_from(["team", "library", "x"]), st.text()),
)
references = st.one_of(
    st.text(max_size=140),
    st.text(alphabet="abcXYZ019._-", min_size=1, max_size=130),
    st.sampled_from(["v1", "latest", "-bad", ".bad", "a" * 129, "sha256:", "sha256:zz"]),
)
digests = st.one_of(
    st.builds(lambda n: "sha256:" + "0123456789abcdef"[n % 16] * 64, st.integers(0, 15)),
    st.builds(
        lambda algo, hexpart: f"{algo}:{hexpart}",
        st.sampled_from(["sha256", "sha512", "SHA256", "md5", "sha256+b64", ""]),
        st.text(alphabet="0123456789abcdefABCDEF=+/", max_size=140),
    ),
    st.text(max_size=80),
)
ranges = st.one_of(
    header_text,
    st.builds(
        lambda unit, a, b: f"{unit}={a}-{b}",
        st.sampled_from(["bytes", "Bytes", "items", ""]),
        st.one_of(st.integers(-5, 10**20), st.just("")),
        st.one_of(st.integers(-5, 10**20), st.just("")),
    ),
    st.builds(
        lambda a, b, c: f"bytes={a}-{b},{c}-", st.integers(0, 99), st.integers(0, 99), st.integers()
    ),
)
authorizations = st.one_of(
    header_text,
    st.builds(lambda t: "Bearer " + t, header_text),
    st.builds(lambda t: "Basic " + t, header_text),
    st.builds(
        lambda u, p: "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode(),
        st.text(max_size=20),
        st.text(max_size=40),
    ),
    st.builds(
        lambda a, b, c: f"Bearer {a}.{b}.{c}",
        st.text(alphabet="ABCxyz019-_", max_size=60),
        st.text(alphabet="ABCxyz019-_", max_size=60),
        st.text(alphabet="ABCxyz019-_", max_size=60),
    ),
)
scopes = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda kind, name, actions: f"{kind}:{name}:{actions}",
        st.sampled_from(["repository", "registry", "repository(plugin)", "", "x"]),
        st.one_of(names, st.just("team/app")),
        st.one_of(
            st.sampled_from(["pull", "push", "pull,push", "*", "delete", "", ",,", "pull,*"]),
            st.text(max_size=20),
        ),
    ),
)
