"""The edge's access-control and TLS keys (edge/accessconfig.py, upstreams' ``auth`` in
edge/upstreamconfig.py): every accepted key does what it says, everything else stops start-up
with the key named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.config import load_edge_config
from regcore.auth.htpasswd import hash_password, write_entries
from regcore.auth.tlscerts import init_certs
from regcore.config import ConfigError

ORIGIN = "http://127.0.0.1:5000"


def _load(tmp_path: Path, doc: dict[str, Any]) -> Any:
    path = tmp_path / "edge.yml"
    path.write_text(yaml.safe_dump(doc))
    return load_edge_config(str(path), {})


def _upstream(**extra: Any) -> dict[str, Any]:
    return {"name": "origin", "url": ORIGIN, **extra}


def test_token_mode_defaults_and_every_key(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"upstreams": [_upstream(auth={"mode": "token", "issuer": "quayside"})]})
    auth = cfg.upstreams[0].auth
    assert auth is not None
    assert (auth.mode, auth.issuer, auth.jwks) == ("token", "quayside", f"{ORIGIN}/auth/jwks.json")
    assert (auth.service, auth.realm, auth.jwks_min_interval) == (None, None, 30.0)
    full = {
        "mode": "token",
        "issuer": "iss",
        "service": "svc",
        "realm": "https://auth.example/token",
        "jwks": "https://auth.example/keys.json",
        "jwks_min_interval": "2m",
    }
    auth = _load(tmp_path, {"upstreams": [_upstream(auth=full)]}).upstreams[0].auth
    assert (auth.issuer, auth.service, auth.realm, auth.jwks, auth.jwks_min_interval) == (
        "iss",
        "svc",
        "https://auth.example/token",
        "https://auth.example/keys.json",
        120.0,
    )
    off = _load(tmp_path, {"upstreams": [_upstream(auth={"mode": "none"})]})
    assert off.upstreams[0].auth is None


@pytest.mark.parametrize(
    ("auth", "extra", "key"),
    [
        ({"mode": "token"}, {}, "auth.issuer"),
        ({"mode": "token", "issuer": "q", "audience": "x"}, {}, "auth.audience"),
        ({"mode": "basic"}, {}, "auth.mode"),
        ({"mode": "none", "issuer": "q"}, {}, "auth.issuer"),
        ({"mode": "token", "issuer": "q"}, {"private": True}, "auth.mode"),
        ({"mode": "token", "issuer": "q", "jwks": "not a url"}, {}, "auth.jwks"),
    ],
)
def test_bad_upstream_auth_is_refused_naming_the_key(
    tmp_path: Path, auth: dict[str, Any], extra: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, {"upstreams": [_upstream(auth=auth, **extra)]})
    assert key in str(exc.value)


def test_edge_users_from_a_bcrypt_htpasswd(tmp_path: Path) -> None:
    users = tmp_path / "users"
    write_entries(users, {"ci": hash_password("secret-pw-1", cost=4)})
    cfg = _load(
        tmp_path,
        {"upstreams": [_upstream()], "auth": {"htpasswd": {"path": str(users), "realm": "r"}}},
    )
    assert (cfg.auth.htpasswd_path, cfg.auth.realm) == (str(users), "r")
    assert _load(tmp_path, {"upstreams": [_upstream()]}).auth.htpasswd_path is None

    users.write_text("ci:$apr1$abc$defghijklmnopqrstuv\n")
    with pytest.raises(ConfigError, match=r"auth\.htpasswd\.path.*line 1") as exc:
        _load(tmp_path, {"upstreams": [_upstream()], "auth": {"htpasswd": {"path": str(users)}}})
    assert "$apr1$abc" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"auth\.htpasswd\.path"):
        _load(tmp_path, {"upstreams": [_upstream()], "auth": {"htpasswd": {"realm": "r"}}})
    with pytest.raises(ConfigError, match=r"auth\.htpasswd\.path"):
        _load(
            tmp_path,
            {"upstreams": [_upstream()], "auth": {"htpasswd": {"path": str(tmp_path / "none")}}},
        )
    with pytest.raises(ConfigError, match=r"auth\.token"):
        _load(tmp_path, {"upstreams": [_upstream()], "auth": {"token": {}}})


def test_edge_users_guarding_nothing_are_refused(tmp_path: Path) -> None:
    users = tmp_path / "users"
    write_entries(users, {"ci": hash_password("secret-pw-1", cost=4)})
    with pytest.raises(ConfigError, match=r"auth\.htpasswd"):
        _load(
            tmp_path,
            {
                "upstreams": [_upstream(private=True)],
                "auth": {"htpasswd": {"path": str(users)}},
            },
        )


def test_tls_keys(tmp_path: Path) -> None:
    certs = init_certs(tmp_path / "certs", ["127.0.0.1"])
    tls = {"certificate": str(certs.cert), "key": str(certs.key)}
    cfg = _load(tmp_path, {"upstreams": [_upstream()], "tls": tls, "listen": "127.0.0.1:5443"})
    assert cfg.tls.enabled and cfg.advertise == "https://127.0.0.1:5443"
    assert cfg.tls.clientcas == () and cfg.tls.minimumtls == "tls1.2"
    plain = _load(tmp_path, {"upstreams": [_upstream()], "listen": "127.0.0.1:5001"})
    assert not plain.tls.enabled and plain.advertise == "http://127.0.0.1:5001"

    mtls = {
        **tls,
        "minimumtls": "tls1.3",
        "clientcas": [str(certs.ca_cert)],
        "peer": {"certificate": str(certs.cert), "key": str(certs.key)},
    }
    cfg = _load(tmp_path, {"upstreams": [_upstream()], "tls": mtls})
    assert cfg.tls.clientcas == (str(certs.ca_cert),) and cfg.tls.peer_cas == cfg.tls.clientcas
    assert cfg.tls.minimumtls == "tls1.3"


@pytest.mark.parametrize(
    ("tls", "key"),
    [
        ({"certificate": "CERT"}, "tls.key"),
        ({"certificate": "CERT", "key": "KEY", "ciphers": "x"}, "tls.ciphers"),
        ({"certificate": "CERT", "key": "KEY", "minimumtls": "ssl3"}, "tls.minimumtls"),
        ({"clientcas": ["CA"]}, "tls.clientcas"),
        ({"certificate": "CERT", "key": "KEY", "clientcas": ["CA"]}, "tls.peer.certificate"),
        ({"certificate": "CERT", "key": "KEY", "clientcas": ["missing.pem"]}, "tls.clientcas"),
        ({"certificate": "CERT", "key": "KEY", "peer": {"certificate": "CERT"}}, "tls.peer.key"),
    ],
)
def test_bad_tls_is_refused_naming_the_key(tmp_path: Path, tls: dict[str, Any], key: str) -> None:
    certs = init_certs(tmp_path / "certs", ["127.0.0.1"])
    names = {"CERT": str(certs.cert), "KEY": str(certs.key), "CA": str(certs.ca_cert)}

    def fill(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fill(x) for x in v]
        return names.get(v, v)

    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, {"upstreams": [_upstream()], "tls": fill(tls)})
    assert key in str(exc.value)


def test_http_section_is_still_unknown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="http"):
        _load(tmp_path, {"upstreams": [_upstream()], "http": {"tls": {}}})
