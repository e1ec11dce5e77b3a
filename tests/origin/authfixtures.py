"""Shared pieces of the origin's access-control tests: users, rules, a configured origin.

``make_auth_origin`` starts the real origin application (``create_app`` on a loopback port via
``aiohttp_client``) with ``auth.htpasswd`` or ``auth.token`` + the built-in token service, an
htpasswd file of :data:`USERS` (bcrypt, low cost to keep tests fast) and :data:`RULES`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from regcore.auth.htpasswd import hash_password, write_entries

USERS = {"alice": "alice-pw-1", "bob": "bob-pw-22", "carol": "carol-pw-333"}
RULES = [
    {"repository": "public/*", "anonymous": "pull", "users": {"alice": "admin", "*": "viewer"}},
    {
        "repository": "team/*",
        "users": {"alice": "admin", "bob": "developer", "carol": "viewer"},
    },
]


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def write_users(path: Path, users: dict[str, str] | None = None) -> Path:
    write_entries(path, {u: hash_password(p, cost=4) for u, p in (users or USERS).items()})
    return path


def auth_overrides(tmp: Path, mode: str = "htpasswd", **quayside_auth: Any) -> dict[str, Any]:
    """Config overrides for ``mode`` ``htpasswd`` or ``token`` (own token service)."""
    users = write_users(tmp / "htpasswd")
    qa: dict[str, Any] = {"access": RULES, **quayside_auth}
    if mode == "htpasswd":
        return {"auth": {"htpasswd": {"realm": "qs-test", "path": str(users)}}, "quayside.auth": qa}
    qa.setdefault("tokenservice", {})
    qa["tokenservice"] = {"enabled": True, "users": str(users), **qa["tokenservice"]}
    return {
        "auth": {
            "token": {
                "realm": "http://127.0.0.1:1/auth/token",
                "service": "quayside",
                "issuer": "quayside",
            }
        },
        "quayside.auth": qa,
    }


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image(seed: str) -> tuple[bytes, bytes, bytes]:
    """(config, layer, manifest) of a tiny OCI image."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = f"layer-{seed}".encode() * 10
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    return config, layer, manifest


async def push_image(
    client: Any, repo: str, tag: str, headers: dict[str, str], seed: str = "x"
) -> tuple[int, str]:
    """Push blobs (monolithic POST+PUT) then the manifest; returns (last status, digest).
    Stops at the first refused request and returns its status."""
    config, layer, manifest = image(seed)
    for blob in (config, layer):
        resp = await client.post(f"/v2/{repo}/blobs/uploads/", headers=headers)
        if resp.status != 202:
            return resp.status, ""
        resp = await client.put(
            resp.headers["Location"], params={"digest": sha256(blob)}, data=blob, headers=headers
        )
        if resp.status != 201:
            return resp.status, ""
    resp = await client.put(
        f"/v2/{repo}/manifests/{tag}",
        data=manifest,
        headers={**headers, "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    return resp.status, sha256(manifest)
