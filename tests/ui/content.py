"""What the UI tests publish to a real origin over HTTP, and the users and rules they use.

:func:`publish` pushes (with alice's credentials, through the real API):

* ``team/app:1.0``: one image (two layers), signed two ways: a cosign signature under the tag
  ``sha256-<hex>.sig`` (simple-signing payload naming the manifest digest, ECDSA P-256 signature
  made here with ``cryptography``, layer annotation ``dev.cosignproject.cosign/signature``) and a
  notation signature artifact referring to it (OCI 1.1 ``subject``); plus a SARIF scan report
  referring to it;
* ``team/app:multi``: a two-platform OCI index (linux/amd64, linux/arm64/v8);
* ``public/base:latest``: an image anyone may pull;
* ``other/secret:1``: a repository only erin may see (pushed with ``other_headers``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from harness import oci_http
from harness.images import Image, ImageIndex, KiB, Platform, make_image, make_index

USERS = {
    "alice": "alice-pw-1",
    "bob": "bob-pw-22",
    "carol": "carol-pw-333",
    "dave": "dave-pw-4444",
    "erin": "erin-pw-55555",
}
RULES = [
    {"repository": "public/*", "anonymous": "pull", "users": {"alice": "admin", "*": "viewer"}},
    {"repository": "team/*", "users": {"alice": "admin", "bob": "developer", "carol": "viewer"}},
    {"repository": "other/*", "users": {"erin": "admin"}},
]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(user: str, password: str | None = None) -> dict[str, str]:
    raw = f"{user}:{password if password is not None else USERS[user]}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@dataclass
class Published:
    app_digest: str
    app_layers: list[tuple[str, int]]
    multi_digest: str
    multi_children: list[str]
    cosign_digest: str
    notation_digest: str
    report_digest: str
    public_digest: str
    secret_digest: str
    held: dict[str, dict[str, int]]  # repository -> every blob and manifest pushed: size

    def repo_bytes(self, name: str) -> int:
        return sum(self.held[name].values())


def _held_by(item: Image | ImageIndex) -> dict[str, int]:
    out = {item.digest: len(item.manifest)}
    for image in item.images if isinstance(item, ImageIndex) else (item,):
        out[image.digest] = len(image.manifest)
        out.update((d, len(b)) for d, b in image.blobs().items())
    return out


def _artifact(artifact_type: str, layer: bytes, layer_type: str, subject: dict[str, Any]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_TYPE, "digest": sha256(EMPTY), "size": len(EMPTY)},
        "layers": [{"mediaType": layer_type, "digest": sha256(layer), "size": len(layer)}],
        "subject": subject,
        "annotations": {"org.opencontainers.image.created": "2024-05-01T12:00:00Z"},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def cosign_signature(repo_ref: str, digest: str) -> tuple[bytes, bytes, bytes]:
    """(config, payload layer, manifest) of a cosign ``.sig`` manifest signing ``digest``."""
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": repo_ref},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()
    key = ec.generate_private_key(ec.SECP256R1())
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    config = json.dumps(
        {"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": sha256(payload),
                    "size": len(payload),
                    "annotations": {"dev.cosignproject.cosign/signature": signature},
                }
            ],
        },
        separators=(",", ":"),
    ).encode()
    return config, payload, manifest


async def publish(
    base_url: str, headers: dict[str, str], other_headers: dict[str, str] | None = None
) -> Published:
    """Push everything listed in the module docstring; returns the digests."""
    app = make_image(layer_sizes=(96 * KiB, 32 * KiB), seed=11, label="team-app")
    multi = make_index(
        platforms=(Platform("linux", "amd64"), Platform("linux", "arm64", "v8")),
        layer_sizes=(16 * KiB,),
        seed=21,
    )
    public = make_image(layer_sizes=(8 * KiB,), seed=31, label="public-base")
    secret = make_image(layer_sizes=(4 * KiB,), seed=41, label="secret")
    async with aiohttp.ClientSession(headers=headers) as s:
        app_digest = await oci_http.push_image(s, base_url, "team/app", "1.0", app)
        multi_digest = await oci_http.push_image(s, base_url, "team/app", "multi", multi)
        public_digest = await oci_http.push_image(s, base_url, "public/base", "latest", public)

        subject = {"mediaType": OCI_MANIFEST, "digest": app_digest, "size": len(app.manifest)}
        config, payload, sig = cosign_signature("127.0.0.1/team/app", app_digest)
        for blob in (config, payload):
            await oci_http.push_blob(s, base_url, "team/app", blob)
        sig_tag = app_digest.replace(":", "-") + ".sig"
        cosign_digest = await oci_http.push_manifest(
            s, base_url, "team/app", sig_tag, sig, OCI_MANIFEST
        )
        await oci_http.push_blob(s, base_url, "team/app", EMPTY)
        jws = b'{"payload":"e30","protected":"e30","header":{},"signature":"c2ln"}'
        await oci_http.push_blob(s, base_url, "team/app", jws)
        notation = _artifact(
            "application/vnd.cncf.notary.signature", jws, "application/jose+json", subject
        )
        notation_digest = await oci_http.push_manifest(
            s, base_url, "team/app", sha256(notation), notation, OCI_MANIFEST
        )
        sarif = json.dumps({"version": "2.1.0", "runs": []}).encode()
        await oci_http.push_blob(s, base_url, "team/app", sarif)
        report = _artifact("application/sarif+json", sarif, "application/sarif+json", subject)
        report_digest = await oci_http.push_manifest(
            s, base_url, "team/app", sha256(report), report, OCI_MANIFEST
        )
    held = {
        "team/app": {**_held_by(app), **_held_by(multi)},
        "public/base": _held_by(public),
        "other/secret": _held_by(secret),
    }
    for blob in (config, payload, sig, EMPTY, jws, notation, sarif, report):
        held["team/app"][sha256(blob)] = len(blob)
    async with aiohttp.ClientSession(headers=other_headers or headers) as s:
        secret_digest = await oci_http.push_image(s, base_url, "other/secret", "1", secret)
    return Published(
        app_digest=app_digest,
        app_layers=[(layer.digest, layer.size) for layer in app.layers],
        multi_digest=multi_digest,
        multi_children=[image.digest for image in multi.images],
        cosign_digest=cosign_digest,
        notation_digest=notation_digest,
        report_digest=report_digest,
        public_digest=public_digest,
        secret_digest=secret_digest,
        held=held,
    )
