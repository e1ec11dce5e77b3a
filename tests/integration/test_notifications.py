"""Notifications from a real origin process to a real receiver (an aiohttp server the test
starts): distribution's envelope, each event delivered once, also across a receiver outage, a
failing receiver and an origin that is killed while events wait in its queue."""

from __future__ import annotations

import collections
import shutil
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness import skopeo
from harness.fixtures import ImageFactory
from harness.images import Image, KiB
from harness.layouts import write_layout
from harness.procs import wait_until
from harness.servers import OriginProcess
from quayside.cli import certs as certs_cli
from regcore.auth.htpasswd import hash_password, write_entries
from tests.integration.eventreceiver import EventReceiver

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover - installed by `make install`
    pytest.skip("skopeo is not installed", allow_module_level=True)

MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
CREDS = "alice:alice-pw"


@pytest.fixture
def receiver() -> Any:
    r = EventReceiver().start()
    try:
        yield r
    finally:
        r.close()


def origin_config(tmp: Path, receiver: EventReceiver, **endpoint: Any) -> dict[str, Any]:
    users = tmp / "htpasswd"
    write_entries(users, {"alice": hash_password("alice-pw", cost=4)})
    return {
        "storage": {"delete": {"enabled": True}},
        "auth": {"htpasswd": {"realm": "qs", "path": str(users)}},
        "quayside": {"auth": {"access": [{"repository": "*", "users": {"alice": "admin"}}]}},
        "notifications": {
            "endpoints": [
                {
                    "name": "all",
                    "url": receiver.url("all"),
                    "headers": {"X-Hook-Token": ["s3cret-hook"]},
                    "timeout": "2s",
                    "threshold": 2,
                    "backoff": "300ms",
                    **endpoint,
                },
                {
                    "name": "nopulls",
                    "url": receiver.url("nopulls"),
                    "ignore": {"actions": ["pull"]},
                    "ignoredmediatypes": ["application/octet-stream"],
                    "backoff": "300ms",
                    "threshold": 2,
                },
            ]
        },
    }


def start_origin(tmp: Path, config: dict[str, Any]) -> OriginProcess:
    return OriginProcess(root=tmp / "root", workdir=tmp / "origin", config=config).start()


def push(image: Image, origin: OriginProcess, repo: str, tag: str, tmp: Path) -> None:
    src = tmp / f"src-{image.digest[7:19]}"
    write_layout(src, {tag: image})
    skopeo.copy(
        f"oci:{src}:{tag}",
        f"docker://{origin.host}/{repo}:{tag}",
        preserve_digests=True,
        dest_creds=CREDS,
    )


def queued(origin: OriginProcess, endpoint: str = "all") -> float:
    return origin.metric("quayside_origin_notification_events", endpoint=endpoint, result="queued")


def assert_once(events: list[dict[str, Any]]) -> None:
    counts = collections.Counter(e["id"] for e in events)
    assert [i for i, n in counts.items() if n > 1] == []


def test_push_pull_delete_events_in_distributions_envelope(
    tmp_path: Path, receiver: EventReceiver, image_factory: ImageFactory
) -> None:
    origin = start_origin(tmp_path, origin_config(tmp_path, receiver))
    try:
        image = image_factory.image(layer_sizes=(64 * KiB, 32 * KiB))
        push(image, origin, "team/app", "1.0", tmp_path)
        skopeo.pull_to_dir(
            origin.host, "team/app", "1.0", tmp_path / "pulled", extra=[f"--src-creds={CREDS}"]
        )
        req = urllib.request.Request(
            f"{origin.url}/v2/team/app/manifests/1.0",
            method="DELETE",
            headers={"Authorization": "Basic YWxpY2U6YWxpY2UtcHc="},
        )
        assert urllib.request.urlopen(req, timeout=10).status == 202
        for endpoint in ("all", "nopulls"):
            got = receiver.wait_for(int(queued(origin, endpoint)), endpoint)
            assert len(got) == queued(origin, endpoint)
    finally:
        origin.close()
    assert origin.server_errors() == []

    for endpoint, headers, env in receiver.posts:
        assert headers["Content-Type"] == MEDIA_TYPE
        actions = {e["action"] for e in env["events"]}
        # Changes come one per envelope, as registry:2 sends them; pulls may be batched.
        assert len(env["events"]) == 1 or actions == {"pull"}
        assert headers.get("X-Hook-Token") == ("s3cret-hook" if endpoint == "all" else None)
    events = receiver.events("all")
    assert_once(events)

    by_action = collections.defaultdict(list)
    for e in events:
        by_action[e["action"]].append(e)
    [manifest_push] = [e for e in by_action["push"] if e["target"].get("tag")]
    target = manifest_push["target"]
    assert target == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": len(image.manifest),
        "digest": image.digest,
        "length": len(image.manifest),
        "repository": "team/app",
        "url": f"{origin.url}/v2/team/app/manifests/{image.digest}",
        "tag": "1.0",
    }
    request = manifest_push["request"]
    assert request["method"] == "PUT" and request["addr"] == "127.0.0.1"
    assert request["host"] == origin.host and "skopeo" in request["useragent"].lower()
    assert request["id"]
    assert manifest_push["actor"] == {"name": "alice"}
    assert manifest_push["source"]["instanceID"] and manifest_push["source"]["addr"]
    assert manifest_push["timestamp"].endswith("Z")

    blob_pushes = {e["target"]["digest"] for e in by_action["push"] if not e["target"].get("tag")}
    assert set(image.blobs()) <= blob_pushes
    pulls = {e["target"]["digest"] for e in by_action["pull"]}
    assert image.digest in pulls and set(image.layer_digests) <= pulls
    [delete] = by_action["delete"]
    assert delete["target"]["tag"] == "1.0" and delete["target"]["repository"] == "team/app"
    assert delete["request"]["method"] == "DELETE"

    # The second endpoint ignores pulls and blob media types: manifest push and the delete.
    other = receiver.events("nopulls")
    assert sorted(e["action"] for e in other) == ["delete", "push"]
    assert {e["id"] for e in other} <= {e["id"] for e in events}  # the same events


def test_events_queued_while_the_receiver_is_down_arrive_once_after(
    tmp_path: Path, receiver: EventReceiver, image_factory: ImageFactory
) -> None:
    origin = start_origin(tmp_path, origin_config(tmp_path, receiver))
    try:
        receiver.stop()
        images = [image_factory.image(layer_sizes=(16 * KiB,)) for _ in range(3)]
        for i, image in enumerate(images):
            push(image, origin, f"down/app{i}", "v1", tmp_path)
        pending = tmp_path / "root" / "quayside" / "notifications" / "all"
        assert wait_until(
            lambda: (
                origin.metric(
                    "quayside_origin_notification_deliveries", endpoint="all", result="failed"
                )
                >= 3
            ),
            timeout=20,
        )
        assert len(list(pending.glob("*.json"))) == queued(origin)
        assert origin.metric("quayside_origin_notification_pending", endpoint="all") > 0

        receiver.start()  # the same port
        expected = int(queued(origin))
        got = receiver.wait_for(expected, "all")
        assert wait_until(lambda: not list(pending.glob("*.json")), timeout=10)
        assert len(receiver.events("all")) == expected
        assert_once(got)
        tags = {
            (e["target"]["repository"], e["target"]["digest"])
            for e in got
            if e["target"].get("tag")
        }
        assert {(f"down/app{i}", im.digest) for i, im in enumerate(images)} <= tags

        # A receiver that answers 503 is retried too; nothing is lost or doubled.
        receiver.fail_next(3)
        push(image_factory.image(layer_sizes=(16 * KiB,)), origin, "down/late", "v1", tmp_path)
        for endpoint in ("all", "nopulls"):
            expected = int(queued(origin, endpoint))
            got = receiver.wait_for(expected, endpoint)
            assert wait_until(lambda: not list(pending.parent.rglob("*.json")), timeout=10)
            assert len(receiver.events(endpoint)) == expected
            assert_once(got)
        assert origin.metric("quayside_origin_notification_deliveries", result="failed") >= 6
    finally:
        origin.close()


def test_events_queued_before_an_origin_kill_are_delivered_after_the_restart(
    tmp_path: Path, receiver: EventReceiver, image_factory: ImageFactory
) -> None:
    origin = start_origin(tmp_path, origin_config(tmp_path, receiver))
    try:
        receiver.stop()
        images = [image_factory.image(layer_sizes=(16 * KiB,)) for _ in range(2)]
        for i, image in enumerate(images):
            push(image, origin, f"restart/app{i}", "v1", tmp_path)
        before = {ep: int(queued(origin, ep)) for ep in ("all", "nopulls")}
        origin.kill()  # SIGKILL: nothing is flushed at exit
        pending = tmp_path / "root" / "quayside" / "notifications"
        assert len(list(pending.rglob("*.json"))) == sum(before.values())

        receiver.start()
        origin.start()
        for endpoint, count in before.items():
            got = receiver.wait_for(count, endpoint)
            assert_once(got)
            tags = {e["target"]["digest"] for e in got if e["target"].get("tag")}
            assert {im.digest for im in images} <= tags
        assert wait_until(lambda: not list(pending.rglob("*.json")), timeout=10)
        for endpoint, count in before.items():
            assert len(receiver.events(endpoint)) == count
    finally:
        origin.close()


def test_endpoint_behind_a_private_ca_receives_events_with_tls_ca(
    tmp_path: Path, image_factory: ImageFactory
) -> None:
    """An HTTPS receiver whose certificate comes from ``quayside certs init``: the endpoint with
    ``tls.ca`` gets the events, the same receiver without it is refused with the certificate
    error logged and gets nothing."""
    certs = tmp_path / "certs"
    result = CliRunner().invoke(
        certs_cli.command, ["init", "--hosts", "127.0.0.1", "--out", str(certs)]
    )
    assert result.exit_code == 0, result.output
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs / "server.crt", certs / "server.key")
    receiver = EventReceiver(ssl_context=server_ctx).start()
    common = {"ignore": {"actions": ["pull"]}, "backoff": "300ms", "threshold": 2}
    config = {
        "notifications": {
            "endpoints": [
                {
                    "name": "trusted",
                    "url": receiver.url("trusted"),
                    "headers": {"X-Hook-Token": ["s3cret-hook"]},
                    "tls": {"ca": str(certs / "ca.crt")},
                    **common,
                },
                {"name": "untrusted", "url": receiver.url("untrusted"), **common},
            ]
        }
    }
    origin = start_origin(tmp_path, config)
    try:
        assert receiver.url("trusted").startswith("https://")
        image = image_factory.image(layer_sizes=(16 * KiB,))
        skopeo.push(image, origin.host, "team/tls", "1", workdir=tmp_path)
        events = receiver.wait_for(3, "trusted")  # config, layer, manifest
        assert any(e["target"].get("tag") == "1" for e in events)
        assert_once(events)

        def untrusted_errors() -> list[str]:
            return [
                line
                for line in origin.log_text().splitlines()
                if '"worker": "untrusted"' in line or '"worker":"untrusted"' in line
            ]

        assert wait_until(untrusted_errors, timeout=20), origin.log_tail()
        assert "certificate verify failed" in untrusted_errors()[0]
        assert receiver.events("untrusted") == []
        assert "s3cret-hook" not in origin.log_text()
    finally:
        origin.close()
        receiver.close()
