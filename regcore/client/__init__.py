"""Async registry client (aiohttp) for upstreams, tests and bench.

Modules: :mod:`.registry` (``RegistryClient``, the API), :mod:`.stream` (resumable blob
downloads), :mod:`.uploads` (push side), :mod:`.exchange` (requests, status check, bounded
body reads), :mod:`.transport` (auth, redirects, retries, timeouts), :mod:`.authorizer`
(the ``Authorization`` a transport sends, token fetches), :mod:`.auth` (challenges, scopes,
token cache, where credentials may go), :mod:`.status` (HTTP status → :mod:`regcore.errors`).
"""

from __future__ import annotations

from regcore.client.auth import Challenge, TokenCache, parse_challenges, repository_scope
from regcore.client.registry import (
    DEFAULT_MANIFEST_ACCEPT,
    FetchedManifest,
    ManifestHead,
    RegistryClient,
)
from regcore.client.status import BlobStreamBroken, DigestMismatch
from regcore.client.stream import BlobStream
from regcore.client.transport import Transport

__all__ = [
    "DEFAULT_MANIFEST_ACCEPT",
    "BlobStream",
    "BlobStreamBroken",
    "Challenge",
    "DigestMismatch",
    "FetchedManifest",
    "ManifestHead",
    "RegistryClient",
    "TokenCache",
    "Transport",
    "parse_challenges",
    "repository_scope",
]
