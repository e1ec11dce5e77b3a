"""What a real ``quayside origin serve`` process loads: bcrypt, PyJWT/cryptography and the
policy engine only when users, tokens or policies are configured.

Each origin is the real command run by the launcher of :mod:`harness.moduledump` (it writes
``sorted(sys.modules)`` to a file at exit), asked a few requests and stopped with SIGTERM.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness import oci_http
from harness.authclients import basic_header
from harness.moduledump import ModuleDumping, loaded
from harness.ports import free_port
from harness.servers import OriginProcess
from regcore.auth.htpasswd import hash_password, write_entries

TOKENS = ("jwt", "cryptography", "regcore.auth.tokens", "regcore.auth.signing")
USERS = ("bcrypt", "regcore.auth.htpasswd")
POLICY = ("regcore.policy",)


class ModuleDumpingOrigin(ModuleDumping, OriginProcess):
    """``quayside origin serve`` that reports its modules (:mod:`harness.moduledump`)."""


@pytest.fixture
def start_origin(tmp_path: Path) -> Iterator[Any]:
    started: list[ModuleDumpingOrigin] = []

    def start(config: Mapping[str, Any] | None = None, **kw: Any) -> ModuleDumpingOrigin:
        origin = ModuleDumpingOrigin(
            workdir=tmp_path / f"origin-{len(started)}", config=config, **kw
        )
        started.append(origin)
        return origin.start()

    try:
        yield start
    finally:
        for origin in started:
            origin.close()


def stopped_modules(origin: ModuleDumpingOrigin) -> set[str]:
    assert origin.stop() == 0, origin.log_tail()
    return origin.modules()


async def test_an_origin_without_auth_or_policies_loads_none_of_them(start_origin: Any) -> None:
    origin = start_origin()
    data = b"origin lazy imports " * 10_000
    async with aiohttp.ClientSession() as session:
        digest = await oci_http.push_blob(session, origin.url, "team/app", data)
        assert await oci_http.get_blob(session, origin.url, "team/app", digest) == data
    modules = stopped_modules(origin)
    assert "origin.app" in modules  # the dump is the server's
    assert loaded(modules, (*TOKENS, *USERS, *POLICY)) == set()


def test_the_token_service_loads_jwt_and_issues_tokens(start_origin: Any, tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    write_entries(htpasswd, {"bob": hash_password("bob-secret-1", cost=4)})
    port = free_port()
    realm = f"http://127.0.0.1:{port}/auth/token"
    config = {
        "auth": {"token": {"realm": realm, "service": "quayside", "issuer": "quayside"}},
        "quayside": {"auth": {"tokenservice": {"enabled": True, "users": str(htpasswd)}}},
    }
    origin = start_origin(config, listen_port=port)
    request = urllib.request.Request(
        f"{realm}?service=quayside&scope=repository:team/app:pull",
        headers=basic_header("bob", "bob-secret-1"),
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert json.loads(resp.read())["token"].count(".") == 2  # a JWT
    modules = stopped_modules(origin)
    assert loaded(modules, (*TOKENS, *USERS)) == {*TOKENS, *USERS}
