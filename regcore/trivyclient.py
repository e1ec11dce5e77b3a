"""A client of a Trivy server (``trivy server``): its Twirp JSON API, as Trivy's own client uses it.

Calls (``POST <server>/twirp/<service>/<method>``, ``Content-Type: application/json``, the
token in ``Trivy-Token`` when one is set; field names from Trivy's rpc/*/service.proto):

- ``trivy.cache.v1.Cache/PutBlob`` ``{"diff_id", "blob_info"}``: what one layer installs
  (:class:`regcore.layerpackages.LayerFacts`);
- ``trivy.cache.v1.Cache/PutArtifact`` ``{"artifact_id", "artifact_info"}``: the image config;
- ``trivy.scanner.v1.Scanner/Scan`` ``{"target", "artifact_id", "blob_ids", "options"}`` ->
  ``{"os", "results": [{"target", "class", "type", "vulnerabilities": [...]}]}``;
- ``trivy.cache.v1.Cache/DeleteBlobs`` ``{"blob_ids"}`` afterwards (best effort).

Errors: :class:`TrivyUnreachable` when the server cannot be reached (refused, DNS, timeout),
:class:`TrivyError` for an answer that is not 200 (Twirp's ``{"code", "msg"}`` quoted) or not
JSON. Messages name the server URL (given by the operator) and never the token.
:func:`trivy_json` turns a Scan answer into Trivy's own JSON report (``trivy image -f json``,
schema 2), the report format the scan policies read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import aiohttp

from regcore.policy.reports import SEVERITIES

__all__ = ["TOKEN_HEADER", "TrivyError", "TrivyServer", "TrivyUnreachable", "trivy_json"]

TOKEN_HEADER = "Trivy-Token"
_SCAN_OPTIONS = {  # both the current and the older option names (unknown ones are ignored)
    "pkg_types": ["os", "library"],
    "scanners": ["vuln"],
    "vuln_type": ["os", "library"],
    "security_checks": ["vuln"],
}


class TrivyError(RuntimeError):
    """The Trivy server answered, but not with a result."""


class TrivyUnreachable(TrivyError):
    """The Trivy server could not be reached."""


class TrivyServer:
    """One Trivy server at ``url``. Use ``async with`` (it owns an aiohttp session)."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> TrivyServer:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=min(10.0, self.timeout))
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, service: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """One Twirp call; the answer's JSON object. Raises TrivyUnreachable / TrivyError."""
        assert self._session is not None, "use TrivyServer in 'async with'"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers[TOKEN_HEADER] = self.token
        url = f"{self.url}/twirp/{service}/{method}"
        try:
            async with self._session.post(url, data=json.dumps(body), headers=headers) as resp:
                text = await resp.text(errors="replace")
                status = resp.status
        except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise TrivyUnreachable(f"trivy server {self.url} is unreachable: {reason}") from None
        if status != 200:
            raise TrivyError(
                f"trivy server {self.url} refused {method}: {status} {_twirp_message(text)}"
            )
        try:
            doc = json.loads(text) if text.strip() else {}
        except ValueError:
            raise TrivyError(f"trivy server {self.url} answered {method} with non-JSON") from None
        if not isinstance(doc, dict):
            raise TrivyError(f"trivy server {self.url} answered {method} with non-object JSON")
        return doc

    async def put_blob(self, blob_id: str, blob_info: dict[str, Any]) -> None:
        await self.call(
            "trivy.cache.v1.Cache", "PutBlob", {"diff_id": blob_id, "blob_info": blob_info}
        )

    async def put_artifact(self, artifact_id: str, artifact_info: dict[str, Any]) -> None:
        await self.call(
            "trivy.cache.v1.Cache",
            "PutArtifact",
            {"artifact_id": artifact_id, "artifact_info": artifact_info},
        )

    async def scan(self, target: str, artifact_id: str, blob_ids: list[str]) -> dict[str, Any]:
        body = {
            "target": target,
            "artifact_id": artifact_id,
            "blob_ids": blob_ids,
            "options": _SCAN_OPTIONS,
        }
        return await self.call("trivy.scanner.v1.Scanner", "Scan", body)

    async def delete_blobs(self, blob_ids: list[str]) -> None:
        await self.call("trivy.cache.v1.Cache", "DeleteBlobs", {"blob_ids": blob_ids})


def _twirp_message(text: str) -> str:
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(doc, dict) and ("code" in doc or "msg" in doc):
        return f"{doc.get('code', '')}: {str(doc.get('msg', ''))[:200]}"
    return text[:200]


def _severity(value: Any) -> str:
    if isinstance(value, int) and 0 <= value < len(SEVERITIES):
        return SEVERITIES[value]
    s = str(value or "UNKNOWN").upper()
    return s if s in SEVERITIES else "UNKNOWN"


def _vulnerability(v: dict[str, Any]) -> dict[str, Any]:
    out = {
        "VulnerabilityID": v.get("vulnerability_id", ""),
        "PkgName": v.get("pkg_name", ""),
        "InstalledVersion": v.get("installed_version", ""),
        "FixedVersion": v.get("fixed_version", ""),
        "Severity": _severity(v.get("severity")),
    }
    for src, dst in (("title", "Title"), ("primary_url", "PrimaryURL"), ("pkg_id", "PkgID")):
        if v.get(src):
            out[dst] = v[src]
    return out


def trivy_json(
    answer: dict[str, Any], *, name: str, repo_digest: str, metadata: dict[str, Any]
) -> bytes:
    """Trivy's JSON report (schema 2) of a Scan ``answer`` for image ``name``."""
    results = []
    for r in answer.get("results") or []:
        if not isinstance(r, dict):
            continue
        vulns = [_vulnerability(v) for v in r.get("vulnerabilities") or [] if isinstance(v, dict)]
        entry: dict[str, Any] = {
            "Target": r.get("target", ""),
            "Class": r.get("class", ""),
            "Type": r.get("type", ""),
        }
        if vulns:
            entry["Vulnerabilities"] = vulns
        results.append(entry)
    os_info = answer.get("os") or {}
    report = {
        "SchemaVersion": 2,
        "CreatedAt": datetime.now(UTC).isoformat(),
        "ArtifactName": name,
        "ArtifactType": "container_image",
        "Metadata": {
            **metadata,
            "OS": {"Family": os_info.get("family", ""), "Name": os_info.get("name", "")},
            "RepoDigests": [repo_digest],
        },
        "Results": results,
    }
    return json.dumps(report, indent=1).encode()
