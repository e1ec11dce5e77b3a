"""The ``policies`` section: origin (``quayside.policies``) and edge (``policies``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.config import load_edge_config
from harness.attachments import SigningKey
from regcore.config import ConfigError, load_origin_config

UPSTREAM = {"upstreams": ["local=http://127.0.0.1:5000"]}


def _origin(tmp_path: Path, policies: dict) -> object:
    path = tmp_path / "config.yml"
    path.write_text(json.dumps({"version": "0.1", "quayside": {"policies": policies}}))
    return load_origin_config(str(path), {})


def test_origin_and_edge_read_the_same_shape(tmp_path: Path) -> None:
    pub = SigningKey("ed25519").write_public(tmp_path / "cosign.pub")
    rsa = SigningKey("rsa").write_public(tmp_path / "rsa.pub")
    policies = {
        "verdict_ttl": "15s",
        "verify": [
            {"name": "team-signed", "repositories": ["team/*"], "keys": [str(pub), str(rsa)]}
        ],
        "scan": [
            {
                "name": "no-high",
                "repositories": "team/*,base/**",
                "mode": "warn",
                "severity": "high",
                "required": "true",
                "allow": ["CVE-2023-44487"],
            }
        ],
    }
    cfg = _origin(tmp_path, policies).policies  # type: ignore[attr-defined]
    assert cfg.verdict_ttl == 15.0 and cfg.active
    verify = cfg.verify_for("team/app")
    assert verify is not None and [k.kind for k in verify.keys] == ["ed25519", "rsa-2048"]
    assert verify.mode == "enforce" and cfg.verify_for("other/app") is None
    scan = cfg.scan_for("base/x/y")
    assert scan is not None and scan.severity == "HIGH" and scan.required and scan.mode == "warn"
    assert scan.allow == {"CVE-2023-44487"}
    edge = load_edge_config(None, {}, {**UPSTREAM, "policies": policies})
    assert edge.policies.verify_for("team/app") is not None and edge.policies.verdict_ttl == 15.0
    assert load_edge_config(None, {}, UPSTREAM).policies.verdict_ttl is None


@pytest.mark.parametrize(
    ("policies", "key", "problem"),
    [
        (
            {"verify": [{"name": "a", "repositories": ["x"], "keys": ["/nonexistent.pub"]}]},
            "quayside.policies.verify[0].keys[0]",
            "cannot read",
        ),
        (
            {"verify": [{"name": "a", "repositories": ["x"]}]},
            "quayside.policies.verify[0].keys",
            "required",
        ),
        (
            {
                "verify": [
                    {"name": "a", "repositories": ["x"], "keys": ["K"], "require": "attested"}
                ]
            },
            "quayside.policies.verify[0].require",
            "only 'signed'",
        ),
        (
            {"verify": [{"name": "a", "repositories": ["x"], "keys": ["K"], "mode": "audit"}]},
            "quayside.policies.verify[0].mode",
            "enforce, warn, off",
        ),
        (
            {"scan": [{"name": "a", "repositories": ["x"], "severity": "severe"}]},
            "quayside.policies.scan[0].severity",
            "expected one of",
        ),
        (
            {"scan": [{"name": "a", "repositories": ["x"], "treshold": "high"}]},
            "quayside.policies.scan[0].treshold",
            "unknown key",
        ),
        (
            {"scan": [{"name": "a", "repositories": ["x"]}, {"name": "a", "repositories": ["y"]}]},
            "quayside.policies.scan[1].name",
            "duplicate",
        ),
        ({"scan": [{"repositories": ["x"]}]}, "quayside.policies.scan[0].name", "required"),
        ({"verdict_ttl": "-1s"}, "quayside.policies.verdict_ttl", "invalid duration"),
        ({"trivy": {"server": "not a url"}}, "quayside.policies.trivy.server", ""),
    ],
)
def test_bad_policies_stop_start_up_naming_the_key(
    tmp_path: Path, policies: dict, key: str, problem: str
) -> None:
    pub = SigningKey().write_public(tmp_path / "k.pub")
    text = json.dumps(policies).replace('"K"', json.dumps(str(pub)))
    with pytest.raises(ConfigError) as info:
        _origin(tmp_path, json.loads(text))
    assert info.value.key == key
    assert problem in str(info.value)


def test_a_private_key_file_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = SigningKey().private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "cosign.key").write_bytes(key)
    policies = {
        "verify": [{"name": "a", "repositories": ["x"], "keys": [str(tmp_path / "cosign.key")]}]
    }
    with pytest.raises(ConfigError, match="a private key"):
        _origin(tmp_path, policies)


def test_edge_has_no_trivy_section_and_names_clash_across_kinds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_edge_config(None, {}, {**UPSTREAM, "policies": {"trivy": {"server": "http://t"}}})
    assert info.value.key == "policies.trivy"
    both = {
        "verify": [{"name": "same", "repositories": ["x"], "keys": ["K"]}],
        "scan": [{"name": "same", "repositories": ["x"]}],
    }
    pub = SigningKey().write_public(tmp_path / "k.pub")
    both["verify"][0]["keys"] = [str(pub)]
    with pytest.raises(ConfigError, match="also a verify policy"):
        _origin(tmp_path, both)
