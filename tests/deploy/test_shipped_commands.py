"""Every server command a deploy file runs starts as written, and the image's HEALTHCHECK
finds it healthy, for both roles.

The command is taken from the file the way its tool reads it (tests/deploy/deployfiles.py) and
run with our installed ``quayside``; only what cannot exist on a test machine is mapped: the
deployment's addresses to loopback ports, its data paths to a temp dir, its config paths to the
shipped files (or the ConfigMap's text), ``redis://redis:6379`` to a real redis-server.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from harness.ports import free_port
from harness.redis import RedisServer
from quayside.healthcheck import probe, target_from_argv
from regcore.auth.tlscerts import init_certs
from tests.deploy.deployfiles import ShippedCommand, all_commands, dockerfile_instructions

QUAYSIDE = str(Path(sys.executable).with_name("quayside"))
COMMANDS = all_commands()
DATA_PREFIXES = ("/var/lib/quayside", "/var/cache/quayside")


def _flags(argv: tuple[str, ...]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def _help(role: str) -> str:
    out = subprocess.run(
        [QUAYSIDE, role, "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_deploy_file_is_read() -> None:
    sources = {c.source.split()[0] for c in COMMANDS}
    assert sources == {"Dockerfile", "systemd", "compose", "kubernetes"}
    assert {c.role for c in COMMANDS} == {"origin", "edge"}


@pytest.mark.parametrize("role", ["origin", "edge"])
def test_flags_used_by_deploy_files_exist(role: str) -> None:
    text = _help(role)
    known = set(re.findall(r"--[a-z][a-z0-9-]*", text))
    for command in (c for c in COMMANDS if c.role == role):
        missing = [f for f in _flags(command.argv) if f not in known]
        assert not missing, (
            f"{command.source} uses {missing}, not in `quayside {role} serve --help`"
        )


def test_image_runs_as_non_root_with_a_healthcheck_for_both_roles() -> None:
    ins = dockerfile_instructions()
    users = [rest for word, rest in ins if word == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    health = [rest for word, rest in ins if word == "HEALTHCHECK"]
    assert len(health) == 1 and "quayside" in health[0] and "healthcheck" in health[0]
    assert "sys.argv" not in health[0]  # the old check could never see the server's argv


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(workdir=tmp_path_factory.mktemp("redis"))
    try:
        yield server.start().url
    finally:
        server.close()


def _localize(
    command: ShippedCommand, tmp: Path, port: int, redis_url: str
) -> tuple[list[str], dict[str, str]]:
    """The command and environment to run it here (see the module docstring)."""

    def path(p: str) -> str:
        for prefix in DATA_PREFIXES:
            if p.startswith(prefix):
                return str(tmp / "data" / p[len(prefix) :].lstrip("/"))
        if p in command.files:
            target = tmp / "etc" / Path(p).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(command.files[p])
            return str(target)
        return p

    for mount, secret in command.secrets.items():
        local = _secret_files(tmp / "secrets" / secret, secret)
        for name, text in list(command.files.items()):
            command.files[name] = text.replace(mount + "/", f"{local}/")
    argv = [QUAYSIDE, *command.argv[1:]]
    for i in range(1, len(argv)):
        prev = argv[i - 1]
        if prev == "--listen":
            argv[i] = f"127.0.0.1:{port}"
        elif prev == "--redis":
            argv[i] = redis_url
        elif prev in ("--config", "--root", "--cache-dir"):
            argv[i] = path(argv[i])
    env = {k: path(v) for k, v in command.env.items()}
    # Addresses and paths written inside the config files (0.0.0.0:500x, /var/...): the
    # documented environment overrides, which a flag of the command still wins over.
    env["REGISTRY_HTTP_ADDR"] = f"127.0.0.1:{port}"
    env["QUAYSIDE_EDGE_LISTEN"] = f"127.0.0.1:{port}"
    env.setdefault("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", str(tmp / "data" / "origin"))
    env.setdefault("QUAYSIDE_EDGE_CACHE_DIR", str(tmp / "data" / "edge-cache"))
    return argv, env


def _secret_files(directory: Path, secret: str) -> Path:
    """What an operator puts in the Secret, made here: certificates or an htpasswd file."""
    directory.mkdir(parents=True, exist_ok=True)
    if "tls" in secret:
        certs = init_certs(directory / "ca", ["127.0.0.1", "localhost"])
        (directory / "tls.crt").write_bytes(certs.cert.read_bytes())
        (directory / "tls.key").write_bytes(certs.key.read_bytes())
    elif "htpasswd" in secret:
        hashed = bcrypt.hashpw(b"deploy-test-password", bcrypt.gensalt(4)).decode()
        (directory / "htpasswd").write_text(f"deploy-test:{hashed}\n")
    # any other Secret (e.g. the edge's optional upstream credentials) stays empty: the
    # shipped config names no file in it, and a config that did would fail to start here
    return directory


@pytest.mark.parametrize("command", COMMANDS, ids=[c.source for c in COMMANDS])
def test_shipped_command_starts_and_is_healthy(
    command: ShippedCommand, tmp_path: Path, redis_url: str
) -> None:
    port = free_port()
    argv, extra = _localize(command, tmp_path, port, redis_url)
    env = {**os.environ, **extra}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = target_from_argv(argv, env).url  # http or https, as the config says
        assert f"127.0.0.1:{port}/healthz" in url
        deadline = time.monotonic() + 30
        while not probe(url, 1.0)[0]:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"no {url} 200 within 30 s"
            time.sleep(0.1)
        # The image's HEALTHCHECK, run as Docker runs it (same env) against this server.
        health = subprocess.run(
            [QUAYSIDE, "healthcheck", "--pid", str(proc.pid)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert health.returncode == 0, health.stdout + health.stderr
        assert f"127.0.0.1:{port}/healthz: 200" in health.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "server.log").read_text()[-3000:]


def test_healthcheck_fails_for_a_stopped_server_and_a_foreign_process(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        out = subprocess.run(
            [QUAYSIDE, "healthcheck", "--pid", str(sleeper.pid)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 2 and "not a quayside server" in out.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    port = free_port()
    out = subprocess.run(
        [QUAYSIDE, "healthcheck", "--url", f"http://127.0.0.1:{port}/healthz", "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
