"""A real origin process in ``auth.htpasswd`` mode, used by skopeo and podman as people do.

One origin (``python -m quayside origin serve --config FILE``) for the module, with bcrypt
users, roles per repository glob and robots; clients log in with the password on stdin
(:mod:`harness.authclients`). The last test reads every log line the origin wrote (its log
and the audit trail) and the clients' error output, and finds none of the passwords, robot
secrets or tokens used.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.authclients import basic_header, podman_login, skopeo, skopeo_login, source_request
from harness.images import make_image
from harness.podman import Podman, unavailable_reason
from harness.servers import OriginProcess
from harness.skopeo import SkopeoError
from regcore.auth.htpasswd import hash_password, write_entries
from regcore.auth.robots import RobotStore

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None:  # pragma: no cover
    pytest.skip("skopeo is not installed", allow_module_level=True)

USERS = {"alice": "Alice-secret-9f1", "bob": "Bob-secret-4c2", "carol": "Carol-secret-7d3"}
RULES = [
    {"repository": "team/*", "users": {"alice": "admin", "bob": "developer", "carol": "viewer"}},
    {"repository": "public/*", "anonymous": "pull", "users": {"*": "viewer", "alice": "admin"}},
]
LIMIT = 3


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.secrets: list[str] = list(USERS.values())
        self.stderr: list[str] = []
        htpasswd = tmp / "htpasswd"
        write_entries(htpasswd, {u: hash_password(p, cost=6) for u, p in USERS.items()})
        self.root = tmp / "root"
        config = {
            "auth": {"htpasswd": {"realm": "quayside-it", "path": str(htpasswd)}},
            "quayside": {
                "auth": {
                    "access": RULES,
                    "limits": {"failures_per_user": LIMIT, "window": "10m"},
                }
            },
        }
        self.origin = OriginProcess(root=self.root, workdir=tmp / "origin", config=config)
        self.robots = RobotStore(self.root / "quayside" / "robots.json")
        self.audit_path = self.root / "quayside" / "audit.log"
        self.image = make_image(layer_sizes=(64 * 1024,), seed=81)
        self.layout = tmp / "layout"
        from harness.layouts import write_layout

        write_layout(self.layout, {"v1": self.image})

    @property
    def host(self) -> str:
        return self.origin.url.split("//", 1)[1]

    def authfile(self, user: str, password: str) -> Path:
        path = self.tmp / f"auth-{user.replace('$', '_')}.json"
        skopeo_login(self.host, user, password, path)
        return path

    def push(self, authfile: Path, repo: str, tag: str) -> None:
        skopeo(["copy", f"oci:{self.layout}:v1", f"docker://{self.host}/{repo}:{tag}"], authfile)

    def refused(self, authfile: Path, repo: str, tag: str) -> str:
        with pytest.raises(SkopeoError) as exc:
            self.push(authfile, repo, tag)
        self.stderr.append(exc.value.stderr)
        return exc.value.stderr

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("origin-auth"))
    s.origin.start()
    try:
        yield s
    finally:
        s.origin.close()
    assert s.origin.server_errors() == []


def test_skopeo_login_push_pull_with_roles(stack: Stack) -> None:
    bob = stack.authfile("bob", USERS["bob"])
    stack.push(bob, "team/app", "1.0")
    carol = stack.authfile("carol", USERS["carol"])
    raw = skopeo(["inspect", "--raw", f"docker://{stack.host}/team/app:1.0"], carol)
    assert raw == stack.image.manifest
    out = stack.tmp / "pulled"
    skopeo(["copy", f"docker://{stack.host}/team/app:1.0", f"dir:{out}"], carol)
    assert (out / "manifest.json").read_bytes() == stack.image.manifest
    assert any(e["action"] == "pull" and e["actor"] == "user:carol" for e in stack.audit())


def test_wrong_password_refused_401_and_audited(stack: Stack) -> None:
    with pytest.raises(SkopeoError) as exc:
        skopeo_login(stack.host, "bob", "Bob-wrong-guess-1", stack.tmp / "nope.json")
    stack.stderr.append(exc.value.stderr)
    assert "invalid username/password" in exc.value.stderr  # what skopeo makes of a 401
    statuses = [
        json.loads(line).get("status")
        for line in stack.origin.log_text().splitlines()
        if line.startswith("{") and '"/v2/"' in line
    ]
    assert 401 in statuses
    failed = [e for e in stack.audit() if e["action"] == "login" and e["result"] == "failed"]
    assert failed[-1]["actor"] == "user:bob" and failed[-1]["client"] == "127.0.0.1"


def test_viewer_push_is_denied_403(stack: Stack) -> None:
    carol = stack.authfile("carol", USERS["carol"])
    before = sorted(p.name for p in (stack.root / "docker/registry/v2/repositories").rglob("*"))
    err = stack.refused(carol, "team/app", "carol")
    assert "denied" in err.lower() or "403" in err
    after = sorted(p.name for p in (stack.root / "docker/registry/v2/repositories").rglob("*"))
    assert before == after
    denied = [e for e in stack.audit() if e["action"] == "denied"]
    assert denied and denied[-1]["actor"] == "user:carol" and denied[-1]["result"] == "forbidden"


def test_robot_inside_outside_revoked_expired(stack: Stack) -> None:
    _robot, secret = stack.robots.create("ci", ["team/*"], push=True, ttl=3600)
    stack.secrets.append(secret)
    ci = stack.authfile("robot$ci", secret)
    stack.push(ci, "team/service", "ci-1")
    err = stack.refused(ci, "public/base", "ci")
    assert "denied" in err.lower() or "403" in err
    stack.robots.revoke("ci")
    with pytest.raises(SkopeoError) as exc:
        skopeo_login(stack.host, "robot$ci", secret, stack.tmp / "revoked.json")
    stack.stderr.append(exc.value.stderr)
    _old, old_secret = stack.robots.create("old", ["team/*"], push=True, ttl=0.5)
    stack.secrets.append(old_secret)
    import time

    time.sleep(0.6)
    with pytest.raises(SkopeoError) as exc:
        skopeo_login(stack.host, "robot$old", old_secret, stack.tmp / "expired.json")
    stack.stderr.append(exc.value.stderr)
    reasons = {e.get("reason") for e in stack.audit() if e["result"] == "failed"}
    assert {"robot revoked", "robot expired"} <= reasons


def test_anonymous_pull_of_public_and_401_elsewhere(stack: Stack) -> None:
    alice = stack.authfile("alice", USERS["alice"])
    stack.push(alice, "public/base", "1")
    port = int(stack.host.rsplit(":", 1)[1])
    status, _, _ = source_request(
        "127.0.0.1",
        port,
        "/v2/public/base/manifests/1",
        source="127.0.0.1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert status == 200
    status, headers, _ = source_request(
        "127.0.0.1", port, "/v2/team/app/tags/list", source="127.0.0.1"
    )
    assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="quayside-it"'
    path = "/v2/_catalog?" + urllib.parse.urlencode({"n": 10})
    status, _, body = source_request(
        "127.0.0.1", port, path, source="127.0.0.1", headers=basic_header("carol", USERS["carol"])
    )
    assert status == 200 and json.loads(body)["repositories"] == [
        "public/base",
        "team/app",
        "team/service",
    ]


def test_brute_force_429_and_owner_elsewhere_logs_in(stack: Stack) -> None:
    port = int(stack.host.rsplit(":", 1)[1])
    guess = basic_header("alice", "Alice-guess-000")
    statuses = [
        source_request("127.0.0.1", port, "/v2/", source="127.0.0.1", headers=guess)[0]
        for _ in range(LIMIT + 1)
    ]
    assert statuses == [401] * LIMIT + [429]
    status, headers, body = source_request(
        "127.0.0.1", port, "/v2/", source="127.0.0.1", headers=basic_header("alice", USERS["alice"])
    )
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS"
    status, _, _ = source_request(
        "127.0.0.1", port, "/v2/", source="127.0.0.2", headers=basic_header("alice", USERS["alice"])
    )
    assert status == 200  # the owner, from another address, is not locked out
    ok = [e for e in stack.audit() if e["action"] == "login" and e["result"] == "ok"]
    assert any(e["client"] == "127.0.0.2" and e["actor"] == "user:alice" for e in ok)


def test_podman_login_pull_push(stack: Stack) -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"podman cannot run here: {reason[:200]}")
    with Podman(stack.tmp / "podman") as podman:
        podman.configure(stack.host)
        authfile = stack.tmp / "podman-auth.json"
        podman_login(podman, stack.host, "bob", USERS["bob"], authfile)
        podman.run(["pull", "--authfile", str(authfile), f"{stack.host}/team/app:1.0"])
        podman.run(
            [
                "push",
                "--authfile",
                str(authfile),
                f"{stack.host}/team/app:1.0",
                f"{stack.host}/team/app:podman",
            ]
        )
    carol = stack.authfile("carol", USERS["carol"])
    digest = json.loads(skopeo(["inspect", f"docker://{stack.host}/team/app:podman"], carol))
    assert digest["Digest"].startswith("sha256:")


def test_no_secret_in_any_log_line(stack: Stack) -> None:
    """Runs last: every line the origin wrote (log + audit trail) and every client error."""
    texts = {
        "origin log": stack.origin.log_text(),
        "audit trail": stack.audit_path.read_text(),
        "client errors": "\n".join(stack.stderr),
    }
    assert len(stack.origin.log_text().splitlines()) > 20  # the access log did record requests
    for where, text in texts.items():
        for secret in stack.secrets:
            assert secret not in text, f"a secret leaked into the {where}"
        assert "Authorization" not in text or where == "client errors"
