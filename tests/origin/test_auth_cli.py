"""``quayside users|robots|audit|certs`` as a person runs them (click's runner, real files)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from origin.audit import AuditLog
from quayside.cli import audit as audit_cli
from quayside.cli import certs as certs_cli
from quayside.cli import robots as robots_cli
from quayside.cli import users as users_cli
from regcore.auth.config import AuditConfig
from regcore.auth.htpasswd import Htpasswd, read_entries
from regcore.auth.robots import RobotStore


def test_users_add_passwd_list_remove_password_from_stdin(tmp_path: Path) -> None:
    file = tmp_path / "htpasswd"
    runner = CliRunner()
    args = ["--htpasswd", str(file), "--cost", "4"]
    result = runner.invoke(users_cli.command, ["add", "alice", *args], input="s3cret-Alice\n")
    assert result.exit_code == 0, result.output
    assert "s3cret-Alice" not in result.output
    assert Htpasswd(file).verify("alice", "s3cret-Alice")
    assert file.stat().st_mode & 0o077 == 0
    again = runner.invoke(users_cli.command, ["add", "alice", *args], input="x\n")
    assert again.exit_code != 0 and "exists" in again.output
    result = runner.invoke(users_cli.command, ["passwd", "alice", *args], input="n3w-Alice\n")
    assert result.exit_code == 0
    assert Htpasswd(file).verify("alice", "n3w-Alice")
    assert not Htpasswd(file).verify("alice", "s3cret-Alice")
    runner.invoke(users_cli.command, ["add", "bob", *args], input="bob-pw\n")
    listed = runner.invoke(users_cli.command, ["list", "--htpasswd", str(file)])
    assert "alice" in listed.output and "bob" in listed.output and "$2b$" not in listed.output
    dry = runner.invoke(users_cli.command, ["remove", "bob", "--dry-run", "--htpasswd", str(file)])
    assert dry.exit_code == 0 and "bob" in read_entries(file)
    gone = runner.invoke(users_cli.command, ["remove", "bob", "--htpasswd", str(file)])
    assert gone.exit_code == 0 and set(read_entries(file)) == {"alice"}
    bad = runner.invoke(users_cli.command, ["add", "robot$x", *args], input="pw\n")
    assert bad.exit_code != 0


def test_users_file_from_config(tmp_path: Path) -> None:
    file = tmp_path / "users.htpasswd"
    config = tmp_path / "config.yml"
    config.write_text(f"auth:\n  htpasswd:\n    realm: r\n    path: {file}\n")
    result = CliRunner().invoke(
        users_cli.command, ["add", "carol", "--config", str(config), "--cost", "4"], input="pw-c\n"
    )
    assert result.exit_code == 0, result.output
    assert set(read_entries(file)) == {"carol"}


def test_robots_create_list_revoke_secret_shown_once(tmp_path: Path) -> None:
    runner = CliRunner()
    root = ["--root", str(tmp_path)]
    result = runner.invoke(
        robots_cli.command,
        ["create", "ci", "--repos", "team/*", "--push", "--expires", "30d", *root],
    )
    assert result.exit_code == 0, result.output
    secret = next(line for line in result.output.splitlines() if line.startswith("qsr_"))
    store_file = tmp_path / "quayside" / "robots.json"
    assert secret not in store_file.read_text()
    robot, reason = RobotStore(store_file).check("ci", secret)
    assert reason == "ok" and robot is not None and robot.push
    assert robot.expires is not None and abs(robot.expires - time.time() - 30 * 86400) < 60
    listed = runner.invoke(robots_cli.command, ["list", *root])
    assert "robot$ci" in listed.output and "active" in listed.output and secret not in listed.output
    assert runner.invoke(robots_cli.command, ["revoke", "ci", *root]).exit_code == 0
    assert RobotStore(store_file).check("ci", secret) == (None, "revoked")
    events = [
        json.loads(line) for line in (tmp_path / "quayside" / "audit.log").read_text().splitlines()
    ]
    assert [e["action"] for e in events] == ["robot.create", "robot.revoke"]
    assert secret not in json.dumps(events)
    bad = runner.invoke(
        robots_cli.command, ["create", "x", "--repos", "a/*", "--expires", "soon", *root]
    )
    assert bad.exit_code != 0


def test_audit_filters_and_json(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(AuditConfig(path=str(path)), clock=lambda: time.time() - 3 * 3600)
    log.record(
        "push", actor="user:alice", client="10.0.0.1", repository="team/app", digest="sha256:aa"
    )
    log.close()
    log = AuditLog(AuditConfig(path=str(path)))
    log.record("pull", actor="user:bob", client="10.0.0.2", repository="team/app", reference="1.0")
    log.record(
        "denied", actor="anonymous", client="10.0.0.3", repository="other/x", result="unauthorized"
    )
    log.record(
        "tag",
        actor="robot:ci",
        client="10.0.0.4",
        repository="team/app",
        moved_from=None,
        moved_to="sha256:bb",
    )
    log.close()
    runner = CliRunner()

    def run(*args: str) -> list[dict]:
        out = runner.invoke(audit_cli.command, ["--file", str(path), "--json", *args])
        assert out.exit_code == 0, out.output
        return [json.loads(line) for line in out.output.splitlines()]

    assert [e["action"] for e in run()] == ["push", "pull", "denied", "tag"]
    assert [e["action"] for e in run("--repo", "team/*")] == ["push", "pull", "tag"]
    assert [e["actor"] for e in run("--actor", "bob")] == ["user:bob"]
    assert [e["actor"] for e in run("--actor", "robot:ci")] == ["robot:ci"]
    assert [e["action"] for e in run("--action", "denied", "--action", "push")] == [
        "push",
        "denied",
    ]
    assert [e["action"] for e in run("--since", "2h")] == ["pull", "denied", "tag"]
    table = runner.invoke(audit_cli.command, ["--file", str(path)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "team/app" in table.output and "sha256:bb" in table.output


def test_certs_init_ca_server_cert_and_instructions(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = CliRunner().invoke(
        certs_cli.command,
        ["init", "--hosts", "registry.local,edge.local,127.0.0.1", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    for text in (
        "/etc/docker/certs.d/registry.local:5000/ca.crt",
        "hosts.toml",
        "--cert-dir",
        "http:",
    ):
        assert text in result.output
    cert = x509.load_pem_x509_certificates((out / "server.crt").read_bytes())[0]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["registry.local", "edge.local"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert (out / "server.key").stat().st_mode & 0o077 == 0
    assert (out / "ca.key").stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in (out / "client").iterdir()) == ["ca.crt"]
    again = CliRunner().invoke(
        certs_cli.command, ["init", "--hosts", "other.local", "--out", str(out)]
    )
    assert again.exit_code == 0 and "reused CA" in again.output
    assert (out / "ca.crt").read_bytes() == ca.public_bytes(serialization.Encoding.PEM)
    bad = CliRunner().invoke(
        certs_cli.command, ["init", "--hosts", "https://x:5000", "--out", str(out)]
    )
    assert bad.exit_code != 0
