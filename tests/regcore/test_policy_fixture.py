"""Our verification against a signature made by the real cosign (tests/regcore/data/cosign).

The fixture is a Sigstore bundle from cosign's own test data: a DSSE envelope signed (ECDSA
P-256) by the key of a Fulcio certificate, naming image ``sha256:7321…0aa4``. Signature checks
use the certificate's key only as a key (no chain is trusted).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from harness.attachments import SigningKey, _referrer
from regcore.policy import signatures as sg
from regcore.policy.evidence import signature_messages
from regcore.policy.keys import key_from_certificate, load_public_key
from regcore.policy.verdicts import SignatureChecker, verify_signatures
from regcore.policyconfig import VerifyPolicy

FIXTURE = Path(__file__).parent / "data" / "cosign" / "oci-attestation.sigstore.json"
SUBJECT = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"


def _bundle() -> tuple[bytes, dict]:
    raw = FIXTURE.read_bytes()
    return raw, json.loads(raw)


def test_real_cosign_dsse_signature_verifies_with_the_signers_key() -> None:
    raw, doc = _bundle()
    cert = base64.b64decode(doc["verificationMaterial"]["certificate"]["rawBytes"])
    key = key_from_certificate(cert, "fulcio leaf")
    assert key.kind == "ecdsa-P-256"
    message, why = sg.bundle_message(raw, SUBJECT, b"", "fixture")
    assert why is None and message is not None and len(message.signatures) == 1
    assert key.verify(message.signatures[0], message.message)
    # one flipped byte of the statement, another key, another subject: all refused
    assert not key.verify(message.signatures[0], message.message.replace(b"foo", b"fop"))
    assert not load_public_key(SigningKey().public_pem()).verify(
        message.signatures[0], message.message
    )
    _, why = sg.bundle_message(raw, "sha256:" + "0" * 64, b"", "fixture")
    assert why is not None and "does not name" in why


async def test_real_cosign_bundle_passes_a_verify_policy_as_a_referrer() -> None:
    from harness.attachments import MemoryRepository, descriptor

    raw, doc = _bundle()
    cert = base64.b64decode(doc["verificationMaterial"]["certificate"]["rawBytes"])
    key = key_from_certificate(cert, "fulcio leaf")
    repo = MemoryRepository()
    # stand-in manifest bytes: only the subject digest matters to the DSSE statement
    kind = "application/vnd.dev.sigstore.bundle.v0.3+json"
    subject = {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "digest": SUBJECT,
        "size": 1,
    }
    art = _referrer(kind, kind, raw, subject)
    repo.add(art)
    messages, notes = await signature_messages(repo, SUBJECT, b"")
    policy = VerifyPolicy("signed", ("*",), (key,))
    verdict = verify_signatures(policy, messages, notes, SignatureChecker())
    assert verdict.ok, verdict.reason
    other = VerifyPolicy("signed", ("*",), (load_public_key(SigningKey().public_pem()),))
    assert not verify_signatures(other, messages, notes, SignatureChecker()).ok
    assert descriptor  # the helper module exports it for other tests


def test_our_signing_matches_cosigns_scheme_for_the_same_message() -> None:
    """What harness.attachments signs verifies the same way the real cosign signature does
    (ECDSA P-256, SHA-256, ASN.1 DER), so the test producers are not a private dialect."""
    raw, _ = _bundle()
    message, _ = sg.bundle_message(raw, SUBJECT, b"", "fixture")
    assert message is not None
    ours = SigningKey("ecdsa")
    sig = ours.sign(message.message)
    assert sig[0] == 0x30  # DER SEQUENCE, like cosign's
    assert message.signatures[0][0] == 0x30
    assert load_public_key(ours.public_pem()).verify(sig, message.message)
