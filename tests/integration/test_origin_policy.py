"""A verify policy at a real origin process: skopeo pulls what is signed, is refused what is not.

Signatures are pushed in cosign's formats (:mod:`harness.attachments`; Debian's skopeo cannot
sign with sigstore keys) with the origin's own client; images are pushed and pulled by skopeo.
The origin re-reads the evidence on every pull (``verdict_ttl`` 0), so a signature pushed
after a refusal counts at once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import skopeo
from harness.attachments import (
    SigningKey,
    bundle_signature,
    cosign_signature,
    descriptor,
    push_artifact,
    push_cosign_signature,
    report_artifact,
    simple_signing_payload,
)
from harness.images import KiB, make_image
from harness.registry import DockerRegistry
from harness.servers import OriginProcess
from regcore.client import RegistryClient
from regcore.policy import signatures as sg

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover - installed by `make install`
    pytest.skip("skopeo is not installed", allow_module_level=True)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def origin(tmp_path: Path, key: SigningKey) -> Iterator[OriginProcess]:
    pub = key.write_public(tmp_path / "cosign.pub")
    config = {
        "version": "0.1",
        "storage": {"delete": {"enabled": True}},
        "quayside": {
            "policies": {
                "verify": [
                    {"name": "team-signed", "repositories": ["team/*"], "keys": [str(pub)]},
                    {
                        "name": "lab-warn",
                        "repositories": ["lab/*"],
                        "keys": [str(pub)],
                        "mode": "warn",
                    },
                ]
            }
        },
    }
    proc = OriginProcess(root=tmp_path / "root", workdir=tmp_path / "origin", config=config)
    try:
        proc.start()
        yield proc
    finally:
        proc.close()
    assert proc.server_errors() == []


def _pull(origin: OriginProcess, ref: str, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    skopeo.copy(f"docker://{origin.host}/{ref}", f"dir:{target}")


def _refused(origin: OriginProcess, ref: str, target: Path) -> str:
    with pytest.raises(skopeo.SkopeoError) as info:
        _pull(origin, ref, target)
    return info.value.stderr


async def test_signed_image_pulls_unsigned_or_wrongly_signed_is_refused(
    origin: OriginProcess, key: SigningKey, tmp_path: Path
) -> None:
    img = make_image(layer_sizes=(64 * KiB,), seed=101)
    skopeo.push(img, origin.host, "team/app", "v1", workdir=tmp_path)
    out = tmp_path / "pulled"
    stderr = _refused(origin, "team/app:v1", out)
    assert "denied" in stderr.lower() and "team-signed" in stderr
    assert "denied" in _refused(origin, f"team/app@{img.digest}", out).lower()

    async with RegistryClient(origin.url) as client:
        # a signature by another key, then one over another digest: still refused
        await push_cosign_signature(client, "team/app", img.digest, SigningKey())
        assert "not signed by a trusted key" in _refused(origin, "team/app:v1", out)
        other = "sha256:" + "9" * 64
        await push_cosign_signature(
            client, "team/app", img.digest, key, payload=simple_signing_payload(other)
        )
        assert "denied" in _refused(origin, "team/app:v1", out).lower()
        # cosign sign --key: pulls by tag and by digest go through, bytes intact
        sig = await push_cosign_signature(client, "team/app", img.digest, key)
        _pull(origin, "team/app:v1", out)
        assert (out / "manifest.json").read_bytes() == img.manifest
        _pull(origin, f"team/app@{img.digest}", out)
        # the signature artifact itself stays readable for cosign verify
        raw = skopeo.inspect_raw(f"docker://{origin.host}/team/app:{sg.signature_tag(img.digest)}")
        assert raw == sig.manifest

        # OCI 1.1 forms found through the referrers API: cosign's and a Sigstore bundle
        for n, make in enumerate((cosign_signature, bundle_signature)):
            other_img = make_image(layer_sizes=(16 * KiB,), seed=200 + n)
            skopeo.push(other_img, origin.host, "team/app", f"r{n}", workdir=tmp_path)
            assert "denied" in _refused(origin, f"team/app:r{n}", out).lower()
            subject = descriptor(other_img.media_type, other_img.manifest)
            art = (
                make(other_img.digest, key, subject=subject)
                if make is cosign_signature
                else make(other_img.digest, key, subject)
            )
            await push_artifact(client, "team/app", art)
            _pull(origin, f"team/app:r{n}", out)

        # a notation signature is stored and listed as a referrer (recognized, not verified)
        notation = report_artifact(
            sg.NOTATION_SIGNATURE, b'{"payload":"x"}', subject, layer_type="application/jose+json"
        )
        await push_artifact(client, "team/app", notation)
        body, headers = await client.get_referrers(
            "team/app", other_img.digest, sg.NOTATION_SIGNATURE
        )
        assert [d["digest"] for d in json.loads(body)["manifests"]] == [notation.digest]
        assert headers["OCI-Filters-Applied"] == "artifactType"
        _pull(origin, f"team/app@{notation.digest}", out)  # an artifact: not judged

        # the signature removed: refused again
        await client.delete_manifest("team/app", sig.digest)
    assert "denied" in _refused(origin, "team/app:v1", out).lower()
    assert origin.metric("quayside_origin_policy_decisions", outcome="denied") >= 6
    assert origin.metric("quayside_origin_policy_decisions", outcome="allowed") >= 4


async def test_warn_mode_serves_and_counts(origin: OriginProcess, tmp_path: Path) -> None:
    img = make_image(layer_sizes=(16 * KiB,), seed=111)
    skopeo.push(img, origin.host, "lab/app", "v1", workdir=tmp_path)
    _pull(origin, "lab/app:v1", tmp_path / "pulled")
    assert (tmp_path / "pulled" / "manifest.json").read_bytes() == img.manifest
    assert (
        origin.metric("quayside_origin_policy_decisions", policy="lab-warn", outcome="warned") == 1
    )
    # repositories no policy names are not judged
    skopeo.push(img, origin.host, "other/app", "v1", workdir=tmp_path)
    _pull(origin, "other/app:v1", tmp_path / "pulled")
    log = origin.log_path.read_text()
    warnings = [json.loads(line) for line in log.splitlines() if "warn-mode policy" in line]
    assert warnings and warnings[0]["policy"] == "lab-warn"


async def test_signature_rewritten_by_containers_image_is_verified(
    origin: OriginProcess, key: SigningKey, docker_registry: DockerRegistry, tmp_path: Path
) -> None:
    """skopeo (containers/image) reads our cosign-format signature as a sigstore attachment
    and writes its own attachment manifest at the destination (its config, our layer): the
    origin verifies what skopeo wrote."""
    img = make_image(layer_sizes=(16 * KiB,), seed=121)
    skopeo.push(img, docker_registry.host, "team/app", "v1", workdir=tmp_path)
    async with RegistryClient(docker_registry.url) as client:
        ours = await push_cosign_signature(client, "team/app", img.digest, key)
    registries_d = tmp_path / "registries.d"
    registries_d.mkdir()
    hosts = (docker_registry.host, origin.host)
    (registries_d / "default.yaml").write_text(
        "docker:\n" + "".join(f"  {h}:\n    use-sigstore-attachments: true\n" for h in hosts)
    )
    skopeo.run(
        [
            "--registries.d", str(registries_d), "copy", "--src-tls-verify=false",
            "--dest-tls-verify=false", "--preserve-digests",
            f"docker://{docker_registry.host}/team/app:v1", f"docker://{origin.host}/team/app:v1",
        ]
    )  # fmt: skip
    tag = sg.signature_tag(img.digest)
    written = skopeo.inspect_raw(f"docker://{origin.host}/team/app:{tag}")
    assert written != ours.manifest  # containers/image's own attachment manifest
    assert json.loads(written)["layers"] == json.loads(ours.manifest)["layers"]
    _pull(origin, "team/app:v1", tmp_path / "pulled")
    assert (tmp_path / "pulled" / "manifest.json").read_bytes() == img.manifest
