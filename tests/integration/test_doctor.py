"""``quayside doctor`` against real processes: a healthy setup passes, each breakage is named.

The healthy setup is what an operator would run: an origin over TLS (a CA and server
certificate from ``regcore.auth.tlscerts``, the ``--ca`` the doctor checks against) with its
token service and a trust bundle, an edge in front of it that logs in with a password file,
and a real redis-server. The doctor runs as its own process (``quayside doctor --json``); the
tests read its JSON and exit status. Each breakage is real: an expired certificate served by
the origin, a storage root on a 1 MiB tmpfs filled up (and an edge cache on a tmpfs without
free inodes), Redis at a port where nothing listens, an upstream that is gone and one that
refuses the edge's password, token keys rotated on disk without a restart, a trust bundle
holding the wrong certificate. Clock skew comes from a small in-test server (a real one
cannot be made to lie about its clock).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.ports import free_port
from harness.redis import RedisServer
from harness.servers import EdgeProcess, ServerGroup
from quayside.doctor import Status, diagnose, load_setup
from regcore.auth.htpasswd import hash_password, write_entries
from regcore.auth.signing import load_or_create
from regcore.auth.tlscerts import init_certs

pytestmark = pytest.mark.slow

PASSWORD = "Bob-doctor-pw-17"


# -- running the doctor --------------------------------------------------------------------
def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """Run ``quayside doctor --json ARGS`` as a process; (exit status, parsed report)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from quayside.cli.doctor import command; command()",
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout.startswith("{"), proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


def by_check(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["group"], c["check"]): c for c in report["checks"]}


def failed(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["group"], c["check"]) for c in report["checks"] if c["status"] == "fail"]


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


# -- a healthy setup -----------------------------------------------------------------------
class Stack:
    """Origin (TLS + token service + bundle), edge (password file, Redis), CA file."""

    def __init__(self, tmp: Path, servers: ServerGroup, redis: RedisServer) -> None:
        self.tmp = tmp
        self.certs = init_certs(tmp / "certs", ["127.0.0.1"])
        self.ca = str(self.certs.ca_cert)
        self.env = {"SSL_CERT_FILE": self.ca}  # how the edge host trusts the private CA
        htpasswd = tmp / "htpasswd"
        write_entries(htpasswd, {"bob": hash_password(PASSWORD, cost=6)})
        self.root = tmp / "origin-root"
        token_dir = self.root / "quayside" / "token"
        self.key_path, self.cert_path = (
            token_dir / "signing-key.pem",
            token_dir / "signing-cert.pem",
        )
        load_or_create(self.key_path, self.cert_path, issuer="quayside", service="quayside")
        self.bundle = tmp / "token-bundle.pem"
        shutil.copyfile(self.cert_path, self.bundle)
        port = free_port()
        self.origin_url = f"https://127.0.0.1:{port}"
        self.origin_config = write_json(
            tmp / "origin.json",
            {
                "version": "0.1",
                "storage": {"filesystem": {"rootdirectory": str(self.root)}},
                "http": {
                    "addr": f"127.0.0.1:{port}",
                    "tls": {"certificate": str(self.certs.cert), "key": str(self.certs.key)},
                },
                "auth": {
                    "token": {
                        "realm": f"{self.origin_url}/auth/token",
                        "service": "quayside",
                        "issuer": "quayside",
                        "rootcertbundle": str(self.bundle),
                    }
                },
                "quayside": {
                    "auth": {
                        "access": [{"repository": "team/*", "users": {"bob": "developer"}}],
                        "tokenservice": {"enabled": True, "users": str(htpasswd)},
                    }
                },
            },
        )
        self.origin = servers.origin(
            root=self.root, config=self.origin_config, listen_port=port, name="origin"
        )
        password_file = tmp / "origin-password"
        password_file.write_text(PASSWORD + "\n")
        self.edge_config = self.write_edge_config(
            "edge.json",
            redis_url=redis.url,
            upstreams=[
                {
                    "name": "origin",
                    "url": self.origin_url,
                    "username": "bob",
                    "password_file": str(password_file),
                }
            ],
        )
        self.edge = self.start_edge(servers, self.edge_config)

    def write_edge_config(
        self, name: str, *, upstreams: list[dict[str, Any]], redis_url: str | None = None
    ) -> Path:
        data: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "cache": {"dir": str(self.tmp / f"{name}-cache"), "size": "256MiB"},
            "upstreams": upstreams,
        }
        if redis_url is not None:
            data["redis"] = {"url": redis_url}
        return write_json(self.tmp / name, data)

    def start_edge(self, servers: ServerGroup, config: Path) -> EdgeProcess:
        cache = Path(json.loads(config.read_text())["cache"]["dir"])
        return servers.edge([], config=config, cache_dir=cache, cache_size="256MiB", env=self.env)

    def run(self, *extra: str, edge_config: Path | None = None) -> tuple[int, dict[str, Any]]:
        edge_config = edge_config or self.edge_config
        return doctor(
            "--config", str(self.origin_config),
            "--config", str(edge_config),
            "--edge", self.edge.url,
            "--ca", self.ca,
            *extra,
            env=self.env,
        )  # fmt: skip


@pytest.fixture
def stack(tmp_path: Path, servers: ServerGroup, redis_server: RedisServer) -> Stack:
    return Stack(tmp_path, servers, redis_server)


def test_healthy_setup_passes_every_check(stack: Stack):
    code, report = stack.run()
    checks = by_check(report)
    assert failed(report) == [], json.dumps(report["checks"], indent=1)
    assert code == 0 and report["ok"] is True
    for key in [
        ("config", "origin.json"),
        ("config", "edge.json"),
        ("origin", "port"),
        ("origin", "api"),
        ("origin", "clock"),
        ("origin", "health"),
        ("origin", "ready"),
        ("origin", "tls-expiry"),
        ("origin", "tls-hostname"),
        ("origin", "tls-trust"),
        ("origin", "tls-config"),
        ("edge", "port"),
        ("edge", "api"),
        ("edge", "health"),
        ("edge", "redis"),
        ("edge", "upstream:origin"),
        ("origin-storage", "writable"),
        ("origin-storage", "space"),
        ("origin-storage", "inodes"),
        ("edge-cache", "writable"),
        ("edge-cache", "cache-bound"),
        ("tokens", "signing-key"),
        ("tokens", "jwks"),
        ("tokens", "bundle"),
        ("tokens", "token"),
        ("clients", "edge-tls"),
    ]:
        assert checks[key]["status"] == "pass", checks.get(key)
    assert checks[("origin", "tls-expiry")]["data"]["days_left"] >= 800
    assert (
        "token from 127.0.0.1, configured credentials"
        in checks[("edge", "upstream:origin")]["detail"]
    )
    assert "the edge (bob)" in checks[("tokens", "token")]["detail"]
    assert report["summary"]["fail"] == 0
    hints = {h["client"]: h for h in report["hints"]}
    assert stack.edge.url in hints["docker"]["text"]
    assert f'[host."{stack.edge.url}"]' in hints["containerd"]["text"]
    assert PASSWORD not in json.dumps(report)  # no secret in the report


def test_table_output_and_exit_status(stack: Stack):
    proc = subprocess.run(
        [
            sys.executable, "-c", "from quayside.cli.doctor import command; command()",
            "--config", str(stack.origin_config), "--ca", stack.ca, "--no-hints",
        ],
        capture_output=True, text=True, timeout=90, env={**os.environ, **stack.env, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no failed check" in proc.stdout
    assert "tls-expiry" in proc.stdout and "PASS" in proc.stdout
    usage = subprocess.run(
        [sys.executable, "-c", "from quayside.cli.doctor import command; command()"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert usage.returncode == 2 and "nothing to check" in usage.stderr


def test_rotated_signing_key_and_wrong_bundle_are_reported(stack: Stack, tmp_path: Path):
    # A bundle with another certificate: registries trusting it refuse the origin's tokens.
    other = tmp_path / "other"
    load_or_create(other / "k.pem", other / "c.pem", issuer="quayside", service="quayside")
    shutil.copyfile(other / "c.pem", stack.bundle)
    code, report = stack.run("--no-hints")
    checks = by_check(report)
    assert code == 1
    assert checks[("tokens", "bundle")]["status"] == "fail"
    assert checks[("tokens", "token")]["status"] == "fail"
    assert "refused by registries trusting the bundle" in checks[("tokens", "token")]["detail"]
    assert checks[("tokens", "jwks")]["status"] == "pass"  # the origin itself is consistent
    # Keys rotated on disk without a restart: the running origin still publishes the old one.
    shutil.copyfile(stack.cert_path, stack.bundle)
    stack.key_path.unlink()
    stack.cert_path.unlink()
    load_or_create(stack.key_path, stack.cert_path, issuer="quayside", service="quayside")
    code, report = stack.run("--no-hints")
    checks = by_check(report)
    assert code == 1
    assert checks[("tokens", "signing-key")]["status"] == "pass"
    assert checks[("tokens", "jwks")]["status"] == "fail"
    assert "restart the origin" in checks[("tokens", "jwks")]["fix"]
    assert checks[("tokens", "bundle")]["status"] == "fail"


# -- breakages -----------------------------------------------------------------------------
def _expired_certificate(out: Path, ca_cert: Path, ca_key: Path) -> tuple[Path, Path]:
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=90))
        .not_valid_after(now - dt.timedelta(days=3))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path, key_path = out / "expired.crt", out / "expired.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_expired_certificate_fails_with_days(tmp_path: Path, servers: ServerGroup):
    certs = init_certs(tmp_path / "certs", ["127.0.0.1"])
    cert, key = _expired_certificate(tmp_path, certs.ca_cert, certs.ca_key)
    port = free_port()
    config = write_json(
        tmp_path / "origin.json",
        {
            "version": "0.1",
            "storage": {"filesystem": {"rootdirectory": str(tmp_path / "root")}},
            "http": {
                "addr": f"127.0.0.1:{port}",
                "tls": {"certificate": str(cert), "key": str(key)},
            },
        },
    )
    servers.origin(root=tmp_path / "root", config=config, listen_port=port)
    code, report = doctor("--config", str(config), "--ca", str(certs.ca_cert))
    checks = by_check(report)
    assert code == 1
    expiry = checks[("origin", "tls-expiry")]
    assert expiry["status"] == "fail"
    assert "expired" in expiry["detail"] and "3 days ago" in expiry["detail"]
    assert expiry["data"]["days_left"] == -3
    assert "renew" in expiry["fix"]
    assert checks[("origin", "tls-hostname")]["status"] == "pass"  # only the dates are wrong
    assert checks[("origin", "tls-trust")]["status"] == "fail"  # clients refuse it too
    assert checks[("origin", "api")]["status"] == "pass"  # and the server itself is up


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Any]:
    """``tmpfs(name, size, inodes=None)`` mounts a real tmpfs under tmp_path (root only);
    every mount is unmounted at teardown (after the servers using it stopped)."""
    mounted: list[Path] = []

    def mount(name: str, size: str, inodes: int | None = None) -> Path:
        where = tmp_path / name
        where.mkdir()
        options = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(directory: Path) -> None:
    """Write until the filesystem refuses (ENOSPC): the disk is full."""
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def _exhaust_inodes(directory: Path) -> int:
    made = 0
    try:
        for i in range(100_000):  # bounded: the tmpfs has far fewer inodes
            (directory / f"i{i}").touch()
            made += 1
    except OSError:
        pass
    return made


def test_full_disk_and_exhausted_inodes_fail_storage(
    tmp_path: Path, servers: ServerGroup, tmpfs: Any
):
    disk = tmpfs("disk", "1m")
    origin_config = write_json(
        tmp_path / "origin.json",
        {"version": "0.1", "storage": {"filesystem": {"rootdirectory": str(disk / "root")}}},
    )
    origin = servers.origin(root=disk / "root", config=origin_config)
    inode_disk = tmpfs("inodes", "16m", inodes=64)
    cache = inode_disk / "cache"
    edge_config = write_json(
        tmp_path / "edge.json",
        {
            "cache": {"dir": str(cache), "size": "8MiB"},
            "upstreams": [{"name": "o", "url": origin.url}],
        },
    )
    edge = servers.edge([], config=edge_config, cache_dir=cache, cache_size="8MiB")
    code, report = doctor(
        "--origin",
        origin.url,
        "--edge",
        edge.url,
        "--config",
        str(origin_config),
        "--config",
        str(edge_config),
    )
    assert failed(report) == [], report["checks"]  # healthy before the disks fill
    _fill(disk)
    assert _exhaust_inodes(inode_disk) > 0
    time.sleep(2.1)  # the servers' health results are reused for 2 s
    code, report = doctor(
        "--origin",
        origin.url,
        "--edge",
        edge.url,
        "--config",
        str(origin_config),
        "--config",
        str(edge_config),
    )
    checks = by_check(report)
    assert code == 1
    writable = checks[("origin-storage", "writable")]
    assert writable["status"] == "fail" and "ENOSPC" in writable["detail"]
    assert "free space" in writable["fix"]
    assert checks[("origin-storage", "space")]["status"] == "fail"
    assert checks[("origin-storage", "space")]["data"]["free_bytes"] == 0
    health = checks[("origin", "health")]
    assert health["status"] == "fail" and "ENOSPC" in health["detail"]  # the origin knows too
    ready = checks[("origin", "ready")]  # pulls still work: ready, but degraded
    assert ready["status"] == "warn" and "low on space" in ready["detail"], ready
    assert checks[("edge-cache", "inodes")]["status"] == "fail"
    assert checks[("edge-cache", "writable")]["status"] == "fail"


def test_unreachable_redis_fails(tmp_path: Path, servers: ServerGroup):
    origin = servers.origin()
    dead = f"redis://127.0.0.1:{free_port()}/0"
    config = write_json(
        tmp_path / "edge.json",
        {
            "cache": {"dir": str(tmp_path / "cache"), "size": "64MiB"},
            "redis": {"url": dead},
            "upstreams": [{"name": "origin", "url": origin.url}],
        },
    )
    edge = servers.edge([], config=config, cache_dir=tmp_path / "cache", cache_size="64MiB")
    code, report = doctor("--config", str(config), "--edge", edge.url)
    checks = by_check(report)
    assert code == 1
    assert failed(report) == [("edge", "redis")]
    redis = checks[("edge", "redis")]
    assert dead in redis["detail"] and "no answer" in redis["detail"]
    assert "redis.url" in redis["fix"]
    assert checks[("edge", "upstream:origin")]["status"] == "pass"


def test_unreachable_upstream_and_refused_credentials_fail(tmp_path: Path, servers: ServerGroup):
    htpasswd = tmp_path / "htpasswd"
    write_entries(htpasswd, {"bob": hash_password(PASSWORD, cost=6)})
    private = servers.origin(
        config={"auth": {"htpasswd": {"realm": "quayside", "path": str(htpasswd)}}}
    )
    public = servers.origin()
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-" + PASSWORD)
    gone = f"http://127.0.0.1:{free_port()}"
    config = write_json(
        tmp_path / "edge.json",
        {
            "cache": {"dir": str(tmp_path / "cache"), "size": "64MiB"},
            "upstreams": [
                {"name": "public", "url": public.url},
                {
                    "name": "private",
                    "url": private.url,
                    "username": "bob",
                    "password_file": str(wrong),
                },
                {"name": "gone", "url": gone},
            ],
        },
    )
    edge = servers.edge([], config=config, cache_dir=tmp_path / "cache", cache_size="64MiB")
    code, report = doctor("--config", str(config), "--edge", edge.url)
    checks = by_check(report)
    assert code == 1
    assert sorted(failed(report)) == [("edge", "upstream:gone"), ("edge", "upstream:private")]
    assert "unreachable" in checks[("edge", "upstream:gone")]["detail"]
    assert "refused the configured credentials" in checks[("edge", "upstream:private")]["detail"]
    assert "password_file" in checks[("edge", "upstream:private")]["fix"]
    assert checks[("edge", "upstream:public")]["status"] == "pass"
    assert PASSWORD not in json.dumps(report)
    # the right password passes
    wrong.write_text(PASSWORD)
    code, report = doctor("--config", str(config), "--edge", edge.url)
    assert by_check(report)[("edge", "upstream:private")]["status"] == "pass"
    assert failed(report) == [("edge", "upstream:gone")]


async def test_clock_skew_beyond_token_leeway_fails(aiohttp_server: Any):
    async def v2(request: web.Request) -> web.Response:
        ahead = email.utils.formatdate(time.time() + 600, usegmt=True)
        return web.json_response(
            {}, headers={"Docker-Distribution-API-Version": "registry/2.0", "Date": ahead}
        )

    app = web.Application()
    app.router.add_get("/v2/", v2)
    server = await aiohttp_server(app)
    report = await diagnose(load_setup(origin_url=str(server.make_url("")).rstrip("/")))
    clock = report.find("origin", "clock")
    assert clock is not None and clock.status is Status.FAIL, report.results
    assert "ahead of this host" in clock.detail
    assert 590 <= clock.data["skew_seconds"] <= 610
    assert report.exit_code == 1
