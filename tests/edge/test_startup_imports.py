"""What a real ``quayside edge serve`` process loads: the libraries of optional features only
when the configuration asks for them.

Each edge here is the real command (``python -m quayside edge serve``, run by the launcher of
:mod:`harness.moduledump`, which writes ``sorted(sys.modules)`` to a file at exit), started
with a config, asked a few requests, stopped with SIGTERM. A bare edge serving a blob fill and warm reads never loads
token verification (PyJWT, cryptography), bcrypt, jinja2, the policy engine or redis-py; an
edge configured with token-mode upstreams, edge users, a verify policy, a region (Redis) or
whose status page is opened loads exactly what that feature needs, and the feature answers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from harness import oci_http
from harness.moduledump import ModuleDumping, loaded
from harness.redis import RedisServer
from harness.registry import DockerRegistry
from harness.servers import EdgeProcess

OPTIONAL = {
    "token": ("jwt", "cryptography", "edge.authtokens", "regcore.auth.tokens"),
    "users": ("bcrypt", "edge.authusers", "regcore.auth.htpasswd"),
    "ui": ("jinja2", "markupsafe"),
    "policy": ("regcore.policy", "regcore.policy.gate", "edge.policy"),
    "region": ("redis", "aiocache"),
}
EVERY_OPTIONAL = {m for modules in OPTIONAL.values() for m in modules}


class ModuleDumpingEdge(ModuleDumping, EdgeProcess):
    """``quayside edge serve`` that reports its modules (:mod:`harness.moduledump`)."""


@pytest.fixture
def start_edge(tmp_path: Path) -> Iterator[Any]:
    started: list[ModuleDumpingEdge] = []

    def start(
        upstreams: Mapping[str, str], config: Mapping[str, Any] | None = None, **kw: Any
    ) -> ModuleDumpingEdge:
        edge = ModuleDumpingEdge(
            upstreams, workdir=tmp_path / f"edge-{len(started)}", config=config, **kw
        )
        started.append(edge)
        return edge.start()

    try:
        yield start
    finally:
        for edge in started:
            edge.close()


def http_get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    """A blocking GET: (status, body text); error statuses are answers too."""
    request = urllib.request.Request(url)
    if auth is not None:
        basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def stopped_modules(edge: ModuleDumpingEdge) -> set[str]:
    assert edge.stop() == 0, edge.log_tail()
    return edge.modules()


async def test_a_bare_edge_serving_a_blob_loads_no_optional_feature(
    start_edge: Any, docker_registry: DockerRegistry
) -> None:
    data = b"lazy imports " * 100_000
    async with aiohttp.ClientSession() as session:
        digest = await oci_http.push_blob(session, docker_registry.url, "team/app", data)
        edge = await asyncio.to_thread(start_edge, {"hub": docker_registry.url})
        for _ in range(2):  # a cold fill, then a read from the cache
            got = await oci_http.get_blob(session, edge.url, "team/app", digest)
            assert got == data
        async with session.get(edge.url + "/v2/") as resp:
            assert resp.status == 200
        async with session.get(edge.url + "/metrics") as resp:
            assert resp.status == 200
    modules = await asyncio.to_thread(stopped_modules, edge)
    assert "edge.app" in modules and "edge.fill" in modules  # the dump is the server's
    assert loaded(modules, EVERY_OPTIONAL) == set()


def test_opening_the_status_page_loads_jinja2(start_edge: Any) -> None:
    edge = start_edge({"hub": "http://127.0.0.1:9"})
    status, body = http_get(edge.url + "/ui/")
    assert status == 200
    assert "Edge node status" in body
    modules = stopped_modules(edge)
    assert loaded(modules, OPTIONAL["ui"]) == set(OPTIONAL["ui"])
    assert loaded(modules, EVERY_OPTIONAL - set(OPTIONAL["ui"])) == set()


def test_edge_users_load_bcrypt_and_sign_in_works(start_edge: Any, tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(4)).decode()
    htpasswd.write_text(f"alice:{hashed}\n")
    config = {"auth": {"htpasswd": {"path": str(htpasswd), "realm": "lazy-test"}}}
    edge = start_edge({"hub": "http://127.0.0.1:9"}, config)
    assert http_get(edge.url + "/v2/")[0] == 401
    assert http_get(edge.url + "/v2/", auth=("alice", "wrong-pass"))[0] == 401
    assert http_get(edge.url + "/v2/", auth=("alice", "s3cret-pass"))[0] == 200
    modules = stopped_modules(edge)
    assert loaded(modules, OPTIONAL["users"]) == set(OPTIONAL["users"])


def test_a_token_mode_upstream_loads_token_verification(start_edge: Any) -> None:
    config = {
        "upstreams": [
            {
                "name": "origin",
                "url": "http://127.0.0.1:9",
                "auth": {"mode": "token", "issuer": "q"},
            }
        ]
    }
    edge = start_edge({}, config)
    # the upstream is unreachable: its realm cannot be learned, so no challenge can be given
    assert http_get(edge.url + "/v2/")[0] == 503
    modules = stopped_modules(edge)
    assert loaded(modules, OPTIONAL["token"]) == set(OPTIONAL["token"])
    assert "edge.authusers" not in modules  # (bcrypt itself comes with cryptography)


def test_a_verify_policy_loads_the_policy_engine(start_edge: Any, tmp_path: Path) -> None:
    key = tmp_path / "cosign.pub"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    policy = {"name": "signed", "repositories": ["team/*"], "keys": [str(key)]}
    edge = start_edge({"hub": "http://127.0.0.1:9"}, {"policies": {"verify": [policy]}})
    modules = stopped_modules(edge)
    assert loaded(modules, OPTIONAL["policy"]) == set(OPTIONAL["policy"])
    assert "cryptography" in modules  # the key was read with it


def test_a_region_loads_redis(start_edge: Any, redis_server: RedisServer) -> None:
    edge = start_edge({"hub": "http://127.0.0.1:9"}, redis_url=redis_server.url)
    status, body = http_get(edge.url + "/healthz")
    assert status == 200
    assert json.loads(body)["redis"] is True
    modules = stopped_modules(edge)
    assert loaded(modules, OPTIONAL["region"]) == set(OPTIONAL["region"])
