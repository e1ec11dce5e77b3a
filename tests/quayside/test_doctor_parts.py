"""The doctor's pure parts: config detection, thresholds, host-name matching, client snippets.

The snippets are parsed by the same parsers the clients use (``json``, ``tomllib``), so a
syntax slip in a generated file fails here; the rest pins the pass/warn/fail boundaries.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import tomllib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from quayside.doctor import Report, Result, Status, load_setup
from quayside.doctor.hints import client_hints, clients_result
from quayside.doctor.network import _clock, check_listen
from quayside.doctor.setup import config_kind, load_edge_config
from quayside.doctor.storage import Thresholds, _inodes, _space
from quayside.doctor.tls import _expiry, _hostname
from regcore.health import DiskSpace

GiB = 1 << 30


def test_config_kind_tells_origin_from_edge():
    assert config_kind({"upstreams": []}) == "edge"
    assert config_kind({"redis": {"url": "redis://x"}}) == "edge"
    assert config_kind({"version": "0.1", "storage": {}}) == "origin"
    assert config_kind({"nothing": 1}) is None
    assert config_kind(["a"]) is None


def test_bad_config_file_is_a_failed_result_and_urls_come_from_configs(tmp_path: Path):
    bad = tmp_path / "edge.yml"
    bad.write_text("upstreams: [{name: a, url: http://127.0.0.1:5000}]\ncache: {sise: 1}\n")
    origin = tmp_path / "origin.yml"
    origin.write_text(
        "version: 0.1\nhttp: {addr: ':5443', tls: {certificate: /nope, key: /nope}}\n"
    )
    good = tmp_path / "edge2.yml"
    good.write_text("listen: 0.0.0.0:5001\nupstreams: [{name: a, url: http://127.0.0.1:5000}]\n")
    setup = load_setup(configs=[str(bad), str(origin), str(good)], environ={})
    status = {r.name: r.status for r in setup.problems}
    assert status == {"edge.yml": Status.FAIL, "origin.yml": Status.FAIL, "edge2.yml": Status.PASS}
    assert "cache.sise" in next(r.detail for r in setup.problems if r.name == "edge.yml")
    assert setup.edge_url == "http://127.0.0.1:5001"  # wildcard listen -> loopback
    assert setup.origin is None and setup.origin_url is None


def _space_of(free: int, total: int, free_inodes: int = 1000, inodes: int = 1000) -> DiskSpace:
    return DiskSpace(free, total, free_inodes, inodes)


def test_space_and_inode_thresholds():
    t = Thresholds()
    assert _space("s", _space_of(50 * GiB, 100 * GiB), t).status is Status.PASS
    assert _space("s", _space_of(8 * GiB, 100 * GiB), t).status is Status.WARN  # < 10 %
    assert _space("s", _space_of(1 * GiB, 100 * GiB), t).status is Status.FAIL  # < 2 %
    assert _space("s", _space_of(0, 1 << 20), t).status is Status.FAIL  # full tmpfs
    assert _space("s", _space_of(1 << 20, 1 << 20), t).status is Status.PASS  # empty tmpfs
    assert _inodes("s", _space_of(1, 1, 500, 1000), t).status is Status.PASS
    assert _inodes("s", _space_of(1, 1, 50, 1000), t).status is Status.WARN
    assert _inodes("s", _space_of(1, 1, 0, 1000), t).status is Status.FAIL
    assert _inodes("s", _space_of(1, 1, 0, 0), t).status is Status.SKIP  # no inode limit


def test_clock_skew_levels():
    now = 1_700_000_000.0

    def at(offset: float) -> Status:
        date = dt.datetime.fromtimestamp(now + offset, dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
        return _clock("origin", date, now).status

    assert at(2) is Status.PASS
    assert at(-30) is Status.WARN
    assert at(61) is Status.FAIL
    assert _clock("origin", None, now).status is Status.SKIP


def _cert(names: list[x509.GeneralName], *, days: float = 90) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored.example")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )


def test_hostname_matching_uses_san_only_with_one_label_wildcards():
    cert = _cert(
        [x509.DNSName("*.registry.example"), x509.IPAddress(ipaddress.ip_address("10.0.0.5"))]
    )
    assert _hostname("o", cert, "edge.registry.example").status is Status.PASS
    assert _hostname("o", cert, "a.b.registry.example").status is Status.FAIL
    assert _hostname("o", cert, "registry.example").status is Status.FAIL
    assert _hostname("o", cert, "10.0.0.5").status is Status.PASS
    assert _hostname("o", cert, "ignored.example").status is Status.FAIL  # CN is not used


def test_expiry_levels_report_days_left():
    now = dt.datetime.now(dt.UTC)
    assert _expiry("o", _cert([x509.DNSName("x.example")], days=200), now).status is Status.PASS
    soon = _expiry("o", _cert([x509.DNSName("x.example")], days=10), now)
    assert soon.status is Status.WARN and soon.data["days_left"] in (9, 10)
    past = _expiry("o", _cert([x509.DNSName("x.example")], days=200), now + dt.timedelta(days=400))
    assert past.status is Status.FAIL and "expired" in past.detail


def test_client_snippets_parse_and_route_each_upstream():
    edge = load_edge_config(
        None,
        {},
        {
            "upstreams": [
                "docker.io=https://registry-1.docker.io",
                "ghcr=https://ghcr.io",
                "origin=http://10.1.2.3:5000",
            ]
        },
    )
    hints = client_hints("http://edge.internal:5001", edge)
    daemon = json.loads(next(h.text for h in hints if h.client == "docker"))
    assert daemon == {
        "registry-mirrors": ["http://edge.internal:5001"],
        "insecure-registries": ["edge.internal:5001"],
    }
    hosts = {h.path: tomllib.loads(h.text) for h in hints if h.client == "containerd"}
    hub = hosts["/etc/containerd/certs.d/docker.io/hosts.toml"]
    assert hub["server"] == "https://registry-1.docker.io"
    assert hub["host"]["http://edge.internal:5001"]["capabilities"] == ["pull", "resolve"]
    assert "/etc/containerd/certs.d/ghcr.io/hosts.toml" in hosts
    assert "/etc/containerd/certs.d/10.1.2.3:5000/hosts.toml" in hosts
    conf = tomllib.loads(next(h.text for h in hints if h.client == "podman"))
    mirrors = {r["prefix"]: r for r in conf["registry"]}
    assert mirrors["docker.io"]["mirror"][0]["location"] == "edge.internal:5001"  # default
    assert mirrors["ghcr.io"]["mirror"][0]["location"] == "edge.internal:5001/ghcr"
    assert mirrors["10.1.2.3:5000"]["insecure"] is True
    assert clients_result("http://edge.internal:5001").status is Status.WARN
    assert clients_result("http://127.0.0.1:5001").status is Status.PASS


def test_listen_on_loopback_while_reached_elsewhere_warns():
    assert check_listen("edge", "127.0.0.1:5001", "http://edge-a.internal:5001").status is (
        Status.WARN
    )
    assert check_listen("edge", "0.0.0.0:5001", "http://edge-a.internal:5001").status is (
        Status.PASS
    )
    assert check_listen("edge", "127.0.0.1:5001", "http://127.0.0.1:5001").status is Status.PASS


def test_report_exit_code_and_json_shape():
    report = Report()
    report.add(Result.ok("g", "a", "fine"))
    report.add(Result.warn("g", "b", "meh", "do x"))
    assert report.exit_code == 0
    report.add(Result.fail("g", "c", "bad", "do y"))
    assert report.exit_code == 1
    doc = json.loads(report.to_json())
    assert doc["ok"] is False
    assert doc["summary"] == {"pass": 1, "warn": 1, "fail": 1, "skip": 0}
    assert doc["checks"][2] == {
        "group": "g",
        "check": "c",
        "status": "fail",
        "detail": "bad",
        "fix": "do y",
    }
