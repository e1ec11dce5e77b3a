"""Token mode with real processes: the origin's own token service, used by skopeo against the
origin itself (``auth.token``) and against a real docker-registry (registry:2, distribution
2.8) that trusts our signing certificate as its ``rootcertbundle``.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.authclients import basic_header, skopeo, skopeo_login
from harness.images import make_image
from harness.layouts import write_layout
from harness.ports import free_port
from harness.registry import DockerRegistry, TokenAuth
from harness.servers import OriginProcess
from harness.skopeo import SkopeoError
from regcore.auth.htpasswd import hash_password, write_entries

pytestmark = pytest.mark.slow

if shutil.which("skopeo") is None or shutil.which("docker-registry") is None:  # pragma: no cover
    pytest.skip("skopeo or docker-registry is not installed", allow_module_level=True)

USERS = {"bob": "Bob-token-pw-51", "carol": "Carol-token-pw-62"}
RULES = [{"repository": "team/*", "users": {"bob": "developer", "carol": "viewer"}}]


class TokenStack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.secrets = list(USERS.values())
        htpasswd = tmp / "htpasswd"
        write_entries(htpasswd, {u: hash_password(p, cost=6) for u, p in USERS.items()})
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/auth/token"
        self.root = tmp / "root"
        config = {
            "auth": {"token": {"realm": self.realm, "service": "quayside", "issuer": "quayside"}},
            "quayside": {
                "auth": {
                    "access": RULES,
                    "tokenservice": {"enabled": True, "users": str(htpasswd)},
                }
            },
        }
        self.origin = OriginProcess(
            root=self.root, workdir=tmp / "origin", config=config, listen_port=self.port
        )
        self.cert = self.root / "quayside" / "token" / "signing-cert.pem"
        self.registry: DockerRegistry | None = None
        self.image = make_image(layer_sizes=(32 * 1024,), seed=91)
        self.layout = tmp / "layout"
        write_layout(self.layout, {"v1": self.image})

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def token(self, user: str, *scopes: str) -> str:
        query = "&".join(["service=quayside", *(f"scope={s}" for s in scopes)])
        req = urllib.request.Request(
            f"{self.realm}?{query}", headers=basic_header(user, USERS[user])
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            token: str = json.loads(resp.read())["token"]
        self.secrets.append(token)
        return token

    def push(self, authfile: Path, host: str, repo: str) -> None:
        skopeo(["copy", f"oci:{self.layout}:v1", f"docker://{host}/{repo}:v1"], authfile)

    def audit(self) -> list[dict[str, Any]]:
        path = self.root / "quayside" / "audit.log"
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenStack]:
    s = TokenStack(tmp_path_factory.mktemp("origin-token"))
    s.origin.start()
    try:
        s.registry = DockerRegistry(
            workdir=s.tmp / "registry",
            auth_token=TokenAuth(s.realm, "quayside", "quayside", str(s.cert)),
        )
        s.registry.start()
        yield s
    finally:
        if s.registry is not None:
            s.registry.close()
        s.origin.close()
    assert s.origin.server_errors() == []


def test_skopeo_login_push_pull_against_origin_in_token_mode(stack: TokenStack) -> None:
    bob = stack.tmp / "bob.json"
    skopeo_login(stack.host, "bob", USERS["bob"], bob)
    stack.push(bob, stack.host, "team/app")
    carol = stack.tmp / "carol.json"
    skopeo_login(stack.host, "carol", USERS["carol"], carol)
    raw = skopeo(["inspect", "--raw", f"docker://{stack.host}/team/app:v1"], carol)
    assert raw == stack.image.manifest
    with pytest.raises(SkopeoError) as exc:
        stack.push(carol, stack.host, "team/app")
    assert "denied" in exc.value.stderr.lower()
    issued = [e for e in stack.audit() if e["action"] == "token"]
    assert any(
        e["actor"] == "user:bob" and "repository:team/app:pull,push" in e["scopes"] for e in issued
    )
    assert any(
        e["actor"] == "user:carol" and e["scopes"] == ["repository:team/app:pull"] for e in issued
    )


def test_docker_registry_accepts_our_tokens_and_refuses_outside_scope(stack: TokenStack) -> None:
    assert stack.registry is not None
    host = stack.registry.host
    bob = stack.tmp / "bob-registry.json"
    skopeo_login(host, "bob", USERS["bob"], bob)
    stack.push(bob, host, "team/app")
    carol = stack.tmp / "carol-registry.json"
    skopeo_login(host, "carol", USERS["carol"], carol)
    raw = skopeo(["inspect", "--raw", f"docker://{host}/team/app:v1"], carol)
    assert raw == stack.image.manifest
    with pytest.raises(SkopeoError):  # outside bob's scope: no rule for other/*
        stack.push(bob, host, "other/app")
    with pytest.raises(SkopeoError):  # carol's token carries pull only
        stack.push(carol, host, "team/app")
    # A token fetched by hand opens exactly what it grants on the reference registry.
    token = stack.token("bob", "repository:team/app:pull")
    req = urllib.request.Request(
        f"{stack.registry.url}/v2/team/app/tags/list", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["tags"] == ["v1"]
    req = urllib.request.Request(
        f"{stack.registry.url}/v2/other/app/tags/list", headers={"Authorization": f"Bearer {token}"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401


def test_no_secret_or_token_in_logs(stack: TokenStack) -> None:
    assert stack.registry is not None
    texts = {
        "origin log": stack.origin.log_text(),
        "audit trail": (stack.root / "quayside" / "audit.log").read_text(),
        "registry log": stack.registry.log_text(),
    }
    for where, text in texts.items():
        for secret in stack.secrets:
            assert secret not in text, f"a secret or token leaked into the {where}"
