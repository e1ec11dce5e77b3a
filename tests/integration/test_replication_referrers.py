"""Replication of referrers (signatures, SBOMs, signatures of SBOMs: manifests pushed by digest
with a ``subject``) from a real origin to a real docker-registry (no referrers API: the
referrers tag schema's ``sha256-<hex>`` index) and to a second Quayside origin (the referrers
API), when the event-driven jobs never carried them: pushed before replication was configured,
or dropped while the target was down. Reconcile repairs them, a dry run only names them, a
second run finds nothing, and with ``replicate_deletes`` extra referrers on the target go.
Deletes keep docker-registry's fallback indexes consistent: a deleted referrer leaves its
subject's index (the tag goes with the last one), a deleted subject takes its index along, and
reconcile repairs indexes older versions left stale."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness import skopeo
from harness.attachments import (
    Artifact,
    SigningKey,
    cosign_signature,
    descriptor,
    push_artifact,
    report_artifact,
)
from harness.images import Image, KiB, make_image
from harness.procs import wait_until
from harness.registry import DockerRegistry
from harness.servers import OriginProcess
from quayside.cli import replicate as replicate_cli
from regcore import errors
from regcore.client import RegistryClient

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover - installed by `make install`
    pytest.skip("skopeo is not installed", allow_module_level=True)

SPDX = "application/spdx+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def replication(url: str, **options: Any) -> dict[str, Any]:
    target = {"name": "dr", "url": url, "repositories": ["team/*"], "replicate_deletes": True}
    return {
        "storage": {"delete": {"enabled": True}},
        "quayside": {
            "replication": {
                "reconcile": {"interval": options.pop("interval", 0)},
                "maxpending": options.pop("maxpending", 10000),
                "targets": [target | {"backoff": "300ms", "timeout": "10s"} | options],
            }
        },
    }


def source(tmp: Path, config: dict[str, Any] | None = None) -> OriginProcess:
    config = config or {"storage": {"delete": {"enabled": True}}}
    return OriginProcess(root=tmp / "root", workdir=tmp / "origin", config=config).start()


def reconcile(tmp: Path, config: dict[str, Any], *extra: str) -> dict[str, Any]:
    path = tmp / "reconcile-config.json"
    path.write_text(json.dumps(config))
    args = ["--reconcile", "--json", "--config", str(path), "--root", str(tmp / "root"), *extra]
    out = CliRunner().invoke(replicate_cli.command, args)
    assert out.exit_code == 0, out.output
    [report] = json.loads(out.stdout)
    return report  # type: ignore[no-any-return]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _push(url: str, repo: str, *artifacts: Artifact) -> None:
    async with RegistryClient(url) as client:
        for artifact in artifacts:
            await push_artifact(client, repo, artifact)


def subject_of(item: Image | Artifact) -> dict[str, Any]:
    media_type = item.media_type
    return descriptor(media_type, item.manifest)


def signed_with_sbom(image: Image, key: SigningKey) -> tuple[Artifact, Artifact, Artifact]:
    """A cosign signature and an SBOM of ``image``, and a signature of the SBOM."""
    sig = cosign_signature(image.digest, key, subject=subject_of(image))
    sbom = report_artifact(SPDX, b'{"spdxVersion":"SPDX-2.3"}', subject_of(image))
    sbom_sig = cosign_signature(sbom.digest, key, subject=subject_of(sbom))
    return sig, sbom, sbom_sig


async def _manifest(url: str, repo: str, ref: str) -> bytes | None:
    async with RegistryClient(url) as client:
        try:
            return (await client.get_manifest(repo, ref)).body
        except (errors.ManifestUnknown, errors.NameUnknown):
            return None


def manifest(url: str, repo: str, ref: str) -> bytes | None:
    return run(_manifest(url, repo, ref))  # type: ignore[no-any-return]


class _MidWrite:
    """What :func:`fallback_index` returns while docker-registry answers 5xx: false and equal
    to no expected value (None included), so a poll goes on and a plain assertion still
    fails."""

    def __eq__(self, other: object) -> bool:
        return False

    def __bool__(self) -> bool:  # not "there" either
        return False

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "<docker-registry answered 5xx>"


MID_WRITE = _MidWrite()


def fallback_index(url: str, repo: str, subject: str) -> list[str] | _MidWrite | None:
    """The digests the referrers tag schema index of ``subject`` lists (None: no such tag).

    docker-registry's filesystem driver rewrites a tag's link file in place (truncate, then
    write): a GET racing the replication job's PUT of the same tag can read an empty link and
    answer 500. That is :data:`MID_WRITE`, never equal to an expected answer."""
    try:
        raw = manifest(url, repo, subject.replace(":", "-", 1))
    except errors.UpstreamUnavailable:  # what the client raises for a 5xx answer
        return MID_WRITE
    return None if raw is None else sorted(d["digest"] for d in json.loads(raw)["manifests"])


def referrers_api(url: str, repo: str, subject: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/v2/{repo}/referrers/{subject}", timeout=10) as resp:
        return sorted(d["digest"] for d in json.loads(resp.read())["manifests"])


def audit_actions(tmp: Path) -> list[tuple[str, str]]:
    lines = (tmp / "root" / "quayside" / "audit.log").read_text().splitlines()
    return [
        (e["reason"].split(": ", 1)[1], e.get("digest") or "")
        for e in map(json.loads, lines)
        if e["action"] == "replicate"
    ]


def test_referrers_pushed_before_replication_was_configured_reach_docker_registry_by_reconcile(
    tmp_path: Path, docker_registry: DockerRegistry
) -> None:
    key = SigningKey()
    image = make_image(layer_sizes=(64 * KiB,), seed=401)
    sig, sbom, sbom_sig = signed_with_sbom(image, key)
    origin = source(tmp_path)
    try:
        skopeo.push(image, origin.host, "team/app", "v1", workdir=tmp_path)
        run(_push(origin.url, "team/app", sig, sbom, sbom_sig))
    finally:
        origin.close()
    config = replication(docker_registry.url)
    expected = sorted(f"team/app@{a.digest}" for a in (sig, sbom, sbom_sig))

    dry = reconcile(tmp_path, config, "--dry-run")
    assert dry["pushed"] == ["team/app:v1"] and sorted(dry["referrers_pushed"]) == expected
    assert dry["referrers_checked"] == 3 and dry["referrers_deleted"] == []
    assert manifest(docker_registry.url, "team/app", "v1") is None  # dry run: nothing pushed
    assert manifest(docker_registry.url, "team/app", sig.digest) is None

    done = reconcile(tmp_path, config)
    assert done["pushed"] == ["team/app:v1"] and sorted(done["referrers_pushed"]) == expected
    url = docker_registry.url
    assert fallback_index(url, "team/app", image.digest) == sorted([sig.digest, sbom.digest])
    assert fallback_index(url, "team/app", sbom.digest) == [sbom_sig.digest]  # referrer's referrer
    for artifact in (sig, sbom, sbom_sig):
        assert manifest(url, "team/app", artifact.digest) == artifact.manifest
    pulled = skopeo.inspect_raw(docker_registry.ref("team/app", sig.digest))
    assert pulled == sig.manifest
    index = json.loads(manifest(url, "team/app", image.digest.replace(":", "-", 1)) or b"")
    assert {d["digest"]: d.get("artifactType") for d in index["manifests"]}[sbom.digest] == SPDX
    assert {(a, d) for a, d in audit_actions(tmp_path)} >= {
        ("reconcile push referrer", artifact.digest) for artifact in (sig, sbom, sbom_sig)
    }

    again = reconcile(tmp_path, config)  # nothing left; the fallback tags are not "extra" tags
    assert again["pushed"] == again["deleted"] == again["referrers_pushed"] == []
    assert again["referrers_deleted"] == [] and again["referrers_checked"] == 3
    assert fallback_index(url, "team/app", image.digest) == sorted([sig.digest, sbom.digest])


def test_jobs_keep_the_fallback_index_and_deletes_rewrite_it_on_docker_registry(
    tmp_path: Path, docker_registry: DockerRegistry
) -> None:
    key, url = SigningKey(), docker_registry.url
    image = make_image(layer_sizes=(32 * KiB,), seed=402)
    first = cosign_signature(image.digest, key, subject=subject_of(image))
    second = cosign_signature(image.digest, SigningKey(), subject=subject_of(image))
    third = cosign_signature(image.digest, SigningKey(), subject=subject_of(image))
    config = replication(url)
    origin = source(tmp_path, config)
    try:
        skopeo.push(image, origin.host, "team/app", "v1", workdir=tmp_path)
        run(_push(origin.url, "team/app", first))
        assert wait_until(lambda: fallback_index(url, "team/app", image.digest), timeout=30)
        run(_push(origin.url, "team/app", second))  # the job adds to the index, keeps `first`
        both = sorted([first.digest, second.digest])
        assert wait_until(lambda: fallback_index(url, "team/app", image.digest) == both, 30)
        req = urllib.request.Request(
            f"{origin.url}/v2/team/app/manifests/{first.digest}", method="DELETE"
        )
        assert urllib.request.urlopen(req, timeout=10).status == 202
        assert wait_until(
            lambda: fallback_index(url, "team/app", image.digest) == [second.digest], timeout=30
        )
        # the job rewrites the index first, then deletes the referrer: wait for both
        assert wait_until(lambda: manifest(url, "team/app", first.digest) is None, timeout=30)
        # `second` deleted on the target behind our back: the next job's index drops it
        # (docker-registry refuses an index naming a manifest it does not have)
        run(_delete(url, "team/app", second.digest))
        run(_push(origin.url, "team/app", third))
        assert wait_until(
            lambda: fallback_index(url, "team/app", image.digest) == [third.digest], timeout=30
        )
    finally:
        origin.close()
    assert origin.server_errors() == []

    # A referrer someone put on the target only (listed in the index as a client would):
    # with replicate_deletes, reconcile takes it out of the index and deletes it.
    stray = cosign_signature(image.digest, SigningKey(), subject=subject_of(image))
    run(_push(url, "team/app", stray))
    raw = manifest(url, "team/app", image.digest.replace(":", "-", 1)) or b""
    doc = json.loads(raw)
    doc["manifests"].append(
        {"mediaType": stray.media_type, "digest": stray.digest, "size": len(stray.manifest)}
    )
    run(_put_index(url, "team/app", image.digest.replace(":", "-", 1), doc))

    # ...and `second`, which the origin still has, is missing there: reconcile pushes it back.
    dry = reconcile(tmp_path, config, "--dry-run")
    assert dry["referrers_deleted"] == [f"team/app@{stray.digest}"]
    assert dry["referrers_pushed"] == [f"team/app@{second.digest}"]
    assert fallback_index(url, "team/app", image.digest) == sorted([third.digest, stray.digest])
    done = reconcile(tmp_path, config)
    assert done["referrers_deleted"] == [f"team/app@{stray.digest}"]
    assert done["referrers_pushed"] == [f"team/app@{second.digest}"] and done["deleted"] == []
    listed = sorted([second.digest, third.digest])
    assert fallback_index(url, "team/app", image.digest) == listed
    assert manifest(url, "team/app", stray.digest) is None
    assert manifest(url, "team/app", second.digest) == second.manifest
    again = reconcile(tmp_path, config)
    assert again["referrers_deleted"] == again["referrers_pushed"] == []


async def _delete(url: str, repo: str, digest: str) -> None:
    async with RegistryClient(url) as client:
        await client.delete_manifest(repo, digest)


async def _put_index(url: str, repo: str, tag: str, doc: dict[str, Any]) -> None:
    async with RegistryClient(url) as client:
        body = json.dumps(doc).encode()
        await client.push_manifest(repo, tag, body, "application/vnd.oci.image.index.v1+json")


def test_referrers_dropped_while_a_quayside_target_was_down_are_repaired_by_reconcile(
    tmp_path: Path,
) -> None:
    second = OriginProcess(
        root=tmp_path / "second-root",
        workdir=tmp_path / "second",
        env={"REGISTRY_STORAGE_DELETE_ENABLED": "true"},
    ).start()
    key = SigningKey()
    image = make_image(layer_sizes=(64 * KiB,), seed=403)
    sig, sbom, sbom_sig = signed_with_sbom(image, key)
    # one pending job at most: with the target down, every job after the image's is dropped
    config = replication(second.url, interval="1s", maxpending=1)
    origin = source(tmp_path, config)
    try:
        second.stop()
        skopeo.push(image, origin.host, "team/app", "v1", workdir=tmp_path)
        run(_push(origin.url, "team/app", sig, sbom, sbom_sig))
        assert wait_until(
            lambda: (
                origin.metric("quayside_origin_replication_jobs", target="dr", result="dropped")
                >= 3
            ),
            timeout=10,
        )
        second.start()
        # the tag and the referrers arrive by separate pushes (the pending job, reconcile's tag
        # pass, its referrer pass); a push refused once is repaired by the next reconcile, so
        # the order they show in is not the contract: all of them are
        assert wait_until(
            lambda: (
                referrers_api(second.url, "team/app", image.digest)
                == sorted([sig.digest, sbom.digest])
                and referrers_api(second.url, "team/app", sbom.digest) == [sbom_sig.digest]
                and manifest(second.url, "team/app", "v1") == image.manifest
            ),
            timeout=60,
        )
        assert wait_until(
            lambda: origin.metric("quayside_origin_replication_drift_repaired", target="dr") >= 3,
            timeout=10,
        )
    finally:
        origin.close()
    assert {("reconcile push referrer", a.digest) for a in (sig, sbom, sbom_sig)} <= set(
        audit_actions(tmp_path)
    )
    try:
        once = reconcile(tmp_path, replication(second.url))
        assert once["referrers_pushed"] == once["pushed"] == once["referrers_deleted"] == []
        assert once["referrers_checked"] == 3

        # replicate_deletes on a target with the referrers API: an extra referrer is deleted
        stray = cosign_signature(image.digest, SigningKey(), subject=subject_of(image))
        run(_push(second.url, "team/app", stray))
        assert stray.digest in referrers_api(second.url, "team/app", image.digest)
        done = reconcile(tmp_path, replication(second.url))
        assert done["referrers_deleted"] == [f"team/app@{stray.digest}"]
        assert referrers_api(second.url, "team/app", image.digest) == sorted(
            [sig.digest, sbom.digest]
        )
        kept = reconcile(tmp_path, replication(second.url, replicate_deletes=False))
        assert kept["referrers_deleted"] == [] and kept["referrers_pushed"] == []
    finally:
        second.close()
    assert origin.server_errors() == [] and second.server_errors() == []


def remote_tags(url: str, repo: str) -> list[str]:
    """``GET /v2/<repo>/tags/list`` of the target, sorted."""
    with urllib.request.urlopen(f"{url}/v2/{repo}/tags/list", timeout=10) as resp:
        return sorted(json.loads(resp.read())["tags"] or [])


def delete_on(url: str, repo: str, digest: str) -> None:
    req = urllib.request.Request(f"{url}/v2/{repo}/manifests/{digest}", method="DELETE")
    assert urllib.request.urlopen(req, timeout=10).status == 202


def fallback_tag_of(item: Image | Artifact) -> str:
    return item.digest.replace(":", "-", 1)


def test_deleted_referrers_and_subjects_leave_no_stale_fallback_index_on_docker_registry(
    tmp_path: Path, docker_registry: DockerRegistry
) -> None:
    key, url = SigningKey(), docker_registry.url
    kept = make_image(layer_sizes=(32 * KiB,), seed=404)
    gone = make_image(layer_sizes=(32 * KiB,), seed=405)
    first = cosign_signature(kept.digest, key, subject=subject_of(kept))
    second = cosign_signature(kept.digest, SigningKey(), subject=subject_of(kept))
    lone = cosign_signature(gone.digest, key, subject=subject_of(gone))
    origin = source(tmp_path, replication(url))
    try:
        skopeo.push(kept, origin.host, "team/app", "v1", workdir=tmp_path)
        skopeo.push(gone, origin.host, "team/app", "v2", workdir=tmp_path)
        run(_push(origin.url, "team/app", first, second, lone))
        both = sorted([first.digest, second.digest])
        assert wait_until(
            lambda: (
                fallback_index(url, "team/app", kept.digest) == both
                and fallback_index(url, "team/app", gone.digest) == [lone.digest]
            ),
            timeout=30,
        )

        # (1) a referrer deleted on the origin leaves the index; the last one takes the tag
        delete_on(origin.url, "team/app", first.digest)
        assert wait_until(
            lambda: fallback_index(url, "team/app", kept.digest) == [second.digest], timeout=30
        )
        # the job rewrites the index first, then deletes the referrer: wait for both
        assert wait_until(lambda: manifest(url, "team/app", first.digest) is None, timeout=30)
        delete_on(origin.url, "team/app", second.digest)
        assert wait_until(
            lambda: fallback_tag_of(kept) not in remote_tags(url, "team/app"), timeout=30
        )
        assert fallback_index(url, "team/app", kept.digest) is None  # the tag's GET is a 404
        assert wait_until(lambda: manifest(url, "team/app", second.digest) is None, timeout=30)

        # (2) the subject deleted on the origin (by digest): its index goes with it
        delete_on(origin.url, "team/app", gone.digest)
        assert wait_until(lambda: manifest(url, "team/app", gone.digest) is None, timeout=30)
        assert wait_until(
            lambda: fallback_tag_of(gone) not in remote_tags(url, "team/app"), timeout=30
        )
        assert fallback_index(url, "team/app", gone.digest) is None
        # the referrer itself stays, as on the origin (a dangling subject's referrer)
        assert manifest(url, "team/app", lone.digest) == lone.manifest
        assert manifest(origin.url, "team/app", lone.digest) == lone.manifest
        # removing the index tags touched no other tag
        assert remote_tags(url, "team/app") == ["v1"]
        assert manifest(url, "team/app", "v1") == kept.manifest
    finally:
        origin.close()
    assert origin.server_errors() == []
    again = reconcile(tmp_path, replication(url))
    assert again["indexes_repaired"] == again["referrers_deleted"] == again["deleted"] == []
    assert again["referrers_pushed"] == again["pushed"] == []


def test_reconcile_repairs_stale_fallback_indexes_on_docker_registry(
    tmp_path: Path, docker_registry: DockerRegistry
) -> None:
    key, url = SigningKey(), docker_registry.url
    signed = make_image(layer_sizes=(32 * KiB,), seed=406)
    deleted = make_image(layer_sizes=(32 * KiB,), seed=407)
    bare = make_image(layer_sizes=(32 * KiB,), seed=408)
    sig = cosign_signature(signed.digest, key, subject=subject_of(signed))
    ghost = cosign_signature(signed.digest, SigningKey(), subject=subject_of(signed))
    orphan = cosign_signature(deleted.digest, key, subject=subject_of(deleted))
    origin = source(tmp_path)
    try:
        for image, tag in ((signed, "v1"), (deleted, "v2"), (bare, "v3")):
            skopeo.push(image, origin.host, "team/app", tag, workdir=tmp_path)
        run(_push(origin.url, "team/app", sig, orphan))
        config = replication(url)
        first = reconcile(tmp_path, config)
        assert sorted(first["pushed"]) == ["team/app:v1", "team/app:v2", "team/app:v3"]
        assert fallback_index(url, "team/app", signed.digest) == [sig.digest]
        assert fallback_index(url, "team/app", deleted.digest) == [orphan.digest]
        # `deleted` is deleted on the origin while replication is off (no job ever runs)
        delete_on(origin.url, "team/app", deleted.digest)
    finally:
        origin.close()

    # What older versions (or a client on the target) left: `ghost` listed in the index of
    # `signed`, then deleted on the target, and `sig` deleted there too; an emptied index
    # kept for `bare`.
    run(_push(url, "team/app", ghost))
    doc = json.loads(manifest(url, "team/app", fallback_tag_of(signed)) or b"")
    doc["manifests"].append(
        {"mediaType": ghost.media_type, "digest": ghost.digest, "size": len(ghost.manifest)}
    )
    run(_put_index(url, "team/app", fallback_tag_of(signed), doc))
    run(_delete(url, "team/app", ghost.digest))
    run(_delete(url, "team/app", sig.digest))
    empty = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    run(_put_index(url, "team/app", fallback_tag_of(bare), empty))
    stale = sorted([sig.digest, ghost.digest])
    assert fallback_index(url, "team/app", signed.digest) == stale
    assert fallback_index(url, "team/app", bare.digest) == []
    assert fallback_index(url, "team/app", deleted.digest) == [orphan.digest]
    indexes = sorted(f"team/app:{fallback_tag_of(i)}" for i in (signed, deleted, bare))

    dry = reconcile(tmp_path, config, "--dry-run")
    assert sorted(dry["indexes_repaired"]) == indexes
    assert dry["referrers_pushed"] == [f"team/app@{sig.digest}"]
    assert dry["deleted"] == ["team/app:v2"] and dry["referrers_deleted"] == []
    assert fallback_index(url, "team/app", signed.digest) == stale  # a dry run changes nothing
    assert fallback_index(url, "team/app", bare.digest) == []

    done = reconcile(tmp_path, config)
    assert sorted(done["indexes_repaired"]) == indexes
    assert done["referrers_pushed"] == [f"team/app@{sig.digest}"]
    assert done["deleted"] == ["team/app:v2"] and done["referrers_deleted"] == []
    assert done["failed"] == []
    assert fallback_index(url, "team/app", signed.digest) == [sig.digest]
    assert manifest(url, "team/app", sig.digest) == sig.manifest
    assert fallback_index(url, "team/app", bare.digest) is None
    assert fallback_index(url, "team/app", deleted.digest) is None
    assert manifest(url, "team/app", deleted.digest) is None
    assert remote_tags(url, "team/app") == sorted(["v1", "v3", fallback_tag_of(signed)])
    assert ("reconcile repair referrers index", "") in audit_actions(tmp_path)

    again = reconcile(tmp_path, config)
    assert again["indexes_repaired"] == again["referrers_pushed"] == again["deleted"] == []
    assert again["referrers_deleted"] == [] and again["failed"] == []


def sha512_of(body: bytes) -> str:
    return "sha512:" + hashlib.sha512(body).hexdigest()


async def _put_image(url: str, repo: str, image: Image, ref: str) -> str:
    async with RegistryClient(url) as client:
        for digest, data in image.blobs().items():
            await client.push_blob(repo, data, digest)
        return await client.push_manifest(repo, ref, image.manifest, image.media_type)


def test_sha512_subject_fallback_index_is_truncated_and_reconciled_on_docker_registry(
    tmp_path: Path, docker_registry: DockerRegistry
) -> None:
    """A subject whose digest is sha512 (the origin keeps a manifest PUT by its sha512 digest
    under that digest) gets the spec's truncated tag ``sha512-<first 64 hex>``; reconcile
    keeps it while the origin has the subject and removes it once the subject is gone.
    docker-registry itself refuses a manifest PUT by a sha512 digest (DIGEST_INVALID: it
    addresses manifests by sha256 only), so the subject reaches it only under its tag
    (stored there under its sha256 digest), while its referrer and the fallback index do."""
    url = docker_registry.url
    image = make_image(layer_sizes=(16 * KiB,), seed=409)
    subject = sha512_of(image.manifest)
    with pytest.raises(errors.DigestInvalid):  # the limit of registry:2, shown
        run(_put_image(url, "team/probe", image, subject))
    sig = cosign_signature(
        subject,
        SigningKey(),
        subject={"mediaType": image.media_type, "digest": subject, "size": len(image.manifest)},
    )
    tag = "sha512-" + subject.removeprefix("sha512:")[:64]
    config = replication(url)
    origin = source(tmp_path)  # no replication configured: reconcile alone reaches the target
    try:
        assert run(_put_image(origin.url, "team/app", image, f"{subject}?tag=v1")) == subject
        run(_push(origin.url, "team/app", sig))

        first = reconcile(tmp_path, config)
        assert first["referrers_pushed"] == [f"team/app@{sig.digest}"]
        # the tag walk pushes v1 under its tag, which docker-registry stores under sha256
        assert first["pushed"] == ["team/app:v1"] and first["failed"] == []
        assert remote_tags(url, "team/app") == sorted([tag, "v1"]) and len(tag) == 71
        raw = manifest(url, "team/app", tag) or b""
        assert [d["digest"] for d in json.loads(raw)["manifests"]] == [sig.digest]

        kept = reconcile(tmp_path, config)  # the origin has the subject: its index stays
        assert kept["indexes_repaired"] == kept["referrers_pushed"] == kept["deleted"] == []
        # v1 is there, under sha256 of the same bytes: no difference, nothing pushed again
        assert kept["pushed"] == [] and kept["failed"] == [] and kept["tags_checked"] == 1
        assert remote_tags(url, "team/app") == sorted([tag, "v1"])

        # the subject is deleted on the origin (no job removes the index: replication is off)
        delete_on(origin.url, "team/app", subject)
    finally:
        origin.close()
    dry = reconcile(tmp_path, config, "--dry-run")
    assert dry["indexes_repaired"] == [f"team/app:{tag}"]
    assert remote_tags(url, "team/app") == sorted([tag, "v1"])
    done = reconcile(tmp_path, config)
    assert done["indexes_repaired"] == [f"team/app:{tag}"] and done["failed"] == []
    assert done["deleted"] == ["team/app:v1"]
    assert remote_tags(url, "team/app") == []
    assert manifest(url, "team/app", tag) is None
    assert manifest(url, "team/app", sig.digest) == sig.manifest  # as on the origin
    again = reconcile(tmp_path, config)
    assert again["indexes_repaired"] == again["deleted"] == again["failed"] == []


def audit_results(tmp: Path) -> list[tuple[str, str, str]]:
    lines = (tmp / "root" / "quayside" / "audit.log").read_text().splitlines()
    return [
        (e["reason"].split(": ", 1)[1], e.get("digest") or "", e.get("result") or "")
        for e in map(json.loads, lines)
        if e["action"] == "replicate"
    ]


def test_sha512_manifests_replicate_by_content_to_docker_registry(
    tmp_path: Path, docker_registry: DockerRegistry
) -> None:
    """docker-registry refuses a manifest PUT by a sha512 digest and files one pushed by tag
    under the sha256 digest of the same bytes. The job for a manifest the origin keeps under
    its sha512 digest pushes it there instead of being refused for good: by its tag when the
    PUT by digest set one (``?tag=``: the event names the tag), else by its sha256 digest;
    reconcile then finds nothing to push, run after run (the comparison is by content, not by
    the digest string)."""
    url = docker_registry.url
    tagged = make_image(layer_sizes=(16 * KiB,), seed=411)
    untagged = make_image(layer_sizes=(16 * KiB,), seed=412)
    config = replication(url)
    origin = source(tmp_path, config)
    try:
        digest = sha512_of(tagged.manifest)
        assert run(_put_image(origin.url, "team/app", tagged, f"{digest}?tag=v1")) == digest
        bare = sha512_of(untagged.manifest)
        assert run(_put_image(origin.url, "team/app", untagged, bare)) == bare
        for image in (tagged, untagged):
            sha256 = "sha256:" + hashlib.sha256(image.manifest).hexdigest()
            body = image.manifest
            assert wait_until(lambda r=sha256, b=body: manifest(url, "team/app", r) == b, 30)
        assert wait_until(
            lambda: (
                {(d, r) for _, d, r in audit_results(tmp_path)} == {(digest, "ok"), (bare, "ok")}
            ),
            30,
        )
    finally:
        origin.close()
    assert origin.server_errors() == []
    assert len(audit_results(tmp_path)) == 2  # one job each, no retries

    assert manifest(url, "team/app", "v1") == tagged.manifest  # the job pushed the tag
    for _ in range(3):
        again = reconcile(tmp_path, config)
        assert again["tags_checked"] == 1 and again["failed"] == []
        assert again["pushed"] == again["deleted"] == again["referrers_pushed"] == []
    assert remote_tags(url, "team/app") == ["v1"]
