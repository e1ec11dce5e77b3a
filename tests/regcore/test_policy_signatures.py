"""Signature formats and keys: cosign's tag scheme, simple signing payloads, bundles, keys."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from harness.attachments import (
    MemoryRepository,
    SigningKey,
    bundle_signature,
    cosign_signature,
    descriptor,
    simple_signing_payload,
)
from regcore.policy import signatures as sg
from regcore.policy.evidence import signature_messages
from regcore.policy.keys import load_public_key, load_public_key_file
from regcore.policy.verdicts import SignatureChecker, verify_signatures
from regcore.policyconfig import VerifyPolicy

IMAGE = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'
    + b"a" * 64
    + b'","size":2},"layers":[]}'
)


def _digest(body: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(body).hexdigest()


def _policy(*keys: SigningKey) -> VerifyPolicy:
    return VerifyPolicy("signed", ("team/*",), tuple(load_public_key(k.public_pem()) for k in keys))


def test_signature_tag_is_cosigns_scheme() -> None:
    assert sg.signature_tag("sha256:" + "ab" * 32) == "sha256-" + "ab" * 32 + ".sig"


@pytest.mark.parametrize("kind", ["ecdsa", "rsa", "ed25519"])
def test_each_key_type_verifies_its_signatures_and_only_its_own(kind: str) -> None:
    key, other = SigningKey(kind), SigningKey(kind)  # type: ignore[arg-type]
    public = load_public_key(key.public_pem(), "cosign.pub")
    message = b"payload"
    assert public.verify(key.sign(message), message)
    assert not public.verify(key.sign(message), b"payload!")
    assert not public.verify(other.sign(message), message)
    assert not public.verify(b"\x00" * 8, message)
    assert public.key_id.startswith("sha256:") and len(public.key_id) == 71


def test_keys_that_are_not_accepted_public_keys_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    pem = weak.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="at least 2048"):
        load_public_key(pem, "weak.pub")
    k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    pem = k1.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="unsupported ECDSA curve"):
        load_public_key(pem, "k1.pub")
    private = SigningKey().private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="private key"):
        load_public_key(private, "cosign.key")
    with pytest.raises(ValueError, match="cannot read"):
        load_public_key_file(tmp_path / "missing.pub")


def test_payload_must_name_the_digest_with_cosigns_type() -> None:
    digest = _digest(IMAGE)
    assert sg.check_payload(simple_signing_payload(digest), digest) is None
    # Go decodes JSON keys case-insensitively: the spec's own example capitalizes the key
    upper = simple_signing_payload(digest).replace(
        b"docker-manifest-digest", b"Docker-manifest-digest"
    )
    assert sg.check_payload(upper, digest) is None
    other = "sha256:" + "0" * 64
    assert "payload names" in (sg.check_payload(simple_signing_payload(other), digest) or "")
    atomic = simple_signing_payload(digest).replace(
        sg.COSIGN_TYPE.encode(), b"atomic container signature"
    )
    assert "payload type" in (sg.check_payload(atomic, digest) or "")
    assert sg.check_payload(b"not json", digest) == "payload is not JSON"


async def test_cosign_tag_signature_is_found_and_verified() -> None:
    key = SigningKey()
    repo = MemoryRepository()
    digest = repo.add_manifest(IMAGE, "v1")
    repo.add(cosign_signature(digest, key, extra_layers=1), sg.signature_tag(digest))
    messages, notes = await signature_messages(repo, digest, IMAGE)
    assert len(messages) == 2 and notes == []
    assert messages[1].origin == f"tag {sg.signature_tag(digest)} layer 1"
    verdict = verify_signatures(_policy(key), messages, notes, SignatureChecker())
    assert verdict.ok and "signed by" in verdict.reason
    verdict = verify_signatures(_policy(SigningKey()), messages, notes, SignatureChecker())
    assert not verdict.ok and "2 signatures checked" in verdict.reason


async def test_a_signature_over_another_digest_does_not_count() -> None:
    key = SigningKey()
    repo = MemoryRepository()
    digest = repo.add_manifest(IMAGE, "v1")
    other = "sha256:" + "1" * 64
    # a valid signature of another image, copied under this image's tag
    repo.add(
        cosign_signature(digest, key, payload=simple_signing_payload(other)),
        sg.signature_tag(digest),
    )
    messages, notes = await signature_messages(repo, digest, IMAGE)
    assert messages == [] and "payload names" in notes[0]
    verdict = verify_signatures(_policy(key), messages, notes, SignatureChecker())
    assert not verdict.ok and verdict.reason.startswith("no signature found")


async def test_tampered_payload_fails_verification() -> None:
    key = SigningKey()
    repo = MemoryRepository()
    digest = repo.add_manifest(IMAGE, "v1")
    art = cosign_signature(digest, key)
    doc = json.loads(art.manifest)
    good_sig = doc["layers"][0]["annotations"][sg.SIGNATURE_ANNOTATION]
    forged = cosign_signature(digest, SigningKey(), payload=simple_signing_payload(digest) + b" ")
    doc = json.loads(forged.manifest)
    doc["layers"][0]["annotations"][sg.SIGNATURE_ANNOTATION] = good_sig
    repo.add_manifest(json.dumps(doc).encode(), sg.signature_tag(digest))
    repo.blobs.update(forged.blobs)
    messages, notes = await signature_messages(repo, digest, IMAGE)
    assert len(messages) == 1
    assert not verify_signatures(_policy(key), messages, notes, SignatureChecker()).ok


async def test_oci11_signature_and_bundle_are_found_through_referrers() -> None:
    key = SigningKey("ed25519")
    subject = descriptor("application/vnd.oci.image.manifest.v1+json", IMAGE)
    for source in ("cosign", "bundle"):
        repo = MemoryRepository()
        digest = repo.add_manifest(IMAGE, "v1")
        art = (
            cosign_signature(digest, key, subject=subject)
            if source == "cosign"
            else bundle_signature(digest, key, subject)
        )
        repo.add(art)
        messages, notes = await signature_messages(repo, digest, IMAGE)
        assert len(messages) == 1, (source, notes)
        assert verify_signatures(_policy(key), messages, notes, SignatureChecker()).ok


async def test_referrers_tag_schema_is_read_when_the_registry_has_no_referrers_api() -> None:
    key = SigningKey()
    repo = MemoryRepository(referrers_api=False)
    digest = repo.add_manifest(IMAGE, "v1")
    subject = descriptor("application/vnd.oci.image.manifest.v1+json", IMAGE)
    art = bundle_signature(digest, key, subject)
    repo.add(art)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": art.media_type,
                "digest": art.digest,
                "size": len(art.manifest),
                "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            }
        ],
    }
    repo.add_manifest(json.dumps(index).encode(), digest.replace(":", "-"))
    messages, _ = await signature_messages(repo, digest, IMAGE)
    assert len(messages) == 1


async def test_notation_signatures_are_reported_not_counted() -> None:
    repo = MemoryRepository()
    digest = repo.add_manifest(IMAGE, "v1")
    subject = descriptor("application/vnd.oci.image.manifest.v1+json", IMAGE)
    from harness.attachments import report_artifact

    repo.add(
        report_artifact(sg.NOTATION_SIGNATURE, b"jws", subject, layer_type="application/jose+json")
    )
    messages, notes = await signature_messages(repo, digest, IMAGE)
    assert messages == [] and "notation" in notes[0]
    verdict = verify_signatures(_policy(SigningKey()), messages, notes, SignatureChecker())
    assert not verdict.ok and "notation" in verdict.reason


def test_bundle_message_signature_covers_the_manifest_bytes() -> None:
    key = SigningKey()
    digest = _digest(IMAGE)
    raw = bytes.fromhex(digest.split(":")[1])
    bundle = json.dumps(
        {
            "messageSignature": {
                "messageDigest": {
                    "algorithm": "SHA2_256",
                    "digest": base64.b64encode(raw).decode(),
                },
                "signature": base64.b64encode(key.sign(IMAGE)).decode(),
            }
        }
    ).encode()
    message, why = sg.bundle_message(bundle, digest, IMAGE, "referrer")
    assert why is None and message is not None
    assert load_public_key(key.public_pem()).verify(message.signatures[0], message.message)
    _, why = sg.bundle_message(bundle, "sha256:" + "2" * 64, IMAGE, "referrer")
    assert why is not None and "message digest" in why


def test_checker_remembers_each_check() -> None:
    key = SigningKey()
    public = load_public_key(key.public_pem())
    checker = SignatureChecker()
    sig = key.sign(b"m")
    assert checker.check(public, sig, b"m") and checker.check(public, sig, b"m")
    assert checker.checks == 1
