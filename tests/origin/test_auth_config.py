"""Access-control configuration: what registry:2 configs carry is honoured or refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from regcore.auth.htpasswd import hash_password
from regcore.config import ConfigError, load_origin_config


def write(tmp: Path, text: str, name: str = "config.yml") -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def htpasswd(tmp: Path, text: str) -> Path:
    path = tmp / "htpasswd"
    path.write_text(text)
    return path


def test_notifications_accepted_and_unknown_endpoint_keys_refused(tmp_path: Path) -> None:
    text = "notifications:\n  endpoints:\n    - name: hook\n      url: https://x\n"
    cfg = load_origin_config(write(tmp_path, text), {}, {})
    assert [e.name for e in cfg.notifications.endpoints] == ["hook"]
    text += "      queue: 5\n"
    with pytest.raises(ConfigError, match=r"unknown key") as exc:
        load_origin_config(write(tmp_path, text), {}, {})
    assert exc.value.key == "notifications.endpoints[0].queue"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("auth: {silly: {realm: x, service: y}}\n", "auth.silly"),
        ("auth: {htpasswd: {realm: x, path: /p, extra: 1}}\n", "auth.htpasswd.extra"),
        ("auth: {token: {realm: 'http://a/t', autoredirect: true}}\n", "auth.token.autoredirect"),
    ],
)
def test_unimplemented_auth_keys_refused(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
        load_origin_config(write(tmp_path, text), {}, {})


def test_htpasswd_non_bcrypt_entry_refused_with_line_number(tmp_path: Path) -> None:
    good = hash_password("pw", cost=4)
    md5 = "$apr1$abcdefgh$0123456789abcdefghijkl"
    path = htpasswd(tmp_path, f"# users\nalice:{good}\nbob:{md5}\n")
    text = f"auth: {{htpasswd: {{realm: r, path: {path}}}}}\n"
    with pytest.raises(ConfigError, match=r"line 3: entry for 'bob' is not a bcrypt hash") as exc:
        load_origin_config(write(tmp_path, text), {}, {})
    assert exc.value.key == "auth.htpasswd.path"
    assert md5 not in str(exc.value) and good not in str(exc.value)
    path.write_text(f"alice:{good}\nthis line has no colon\n")
    with pytest.raises(ConfigError, match="line 2: not a 'user:hash' entry"):
        load_origin_config(write(tmp_path, text), {}, {})


def test_htpasswd_from_registry_env_names(tmp_path: Path) -> None:
    path = htpasswd(tmp_path, f"alice:{hash_password('pw', cost=4)}\n")
    env = {
        "REGISTRY_AUTH_HTPASSWD_REALM": "Registry Realm",
        "REGISTRY_AUTH_HTPASSWD_PATH": str(path),
    }
    cfg = load_origin_config(None, env, {})
    assert cfg.auth.mode == "htpasswd"
    assert cfg.auth.htpasswd is not None and cfg.auth.htpasswd.realm == "Registry Realm"
    with pytest.raises(ConfigError, match="does not exist"):
        load_origin_config(None, {"REGISTRY_AUTH_HTPASSWD_PATH": str(tmp_path / "nope")}, {})


def test_inconsistent_auth_settings_refused(tmp_path: Path) -> None:
    path = htpasswd(tmp_path, f"alice:{hash_password('pw', cost=4)}\n")
    both = {
        "auth": {
            "htpasswd": {"realm": "r", "path": str(path)},
            "token": {"realm": "http://a/t", "service": "s", "issuer": "i"},
        }
    }
    with pytest.raises(ConfigError, match="choose one"):
        load_origin_config(None, {}, both)
    no_bundle = {"auth": {"token": {"realm": "http://a/t", "service": "s", "issuer": "i"}}}
    with pytest.raises(ConfigError, match="rootcertbundle"):
        load_origin_config(None, {}, no_bundle)
    rules = {"quayside.auth.access": [{"repository": "*", "anonymous": "pull"}]}
    with pytest.raises(ConfigError, match="access rules need auth"):
        load_origin_config(None, {}, rules)
    bad_role = {
        "auth": {"htpasswd": {"realm": "r", "path": str(path)}},
        "quayside.auth.access": [{"repository": "*", "users": {"alice": "owner"}}],
    }
    with pytest.raises(ConfigError, match=r"quayside\.auth\.access\[0\]\.users\.alice"):
        load_origin_config(None, {}, bad_role)
    bad_cidr = {"auth": both["auth"] | {"token": None}, "quayside.auth.allow": {"push": ["nope"]}}
    with pytest.raises(ConfigError, match=r"quayside\.auth\.allow\.push"):
        load_origin_config(None, {}, bad_cidr)


def test_delete_default_off_and_auth_defaults(tmp_path: Path) -> None:
    cfg = load_origin_config(None, {}, {"storage.filesystem.rootdirectory": str(tmp_path)})
    assert cfg.storage.delete_enabled is False
    assert cfg.auth.mode == "none"
    assert cfg.auth.audit.path == str(tmp_path / "quayside" / "audit.log")
    assert cfg.auth.tokenservice.expiration == 300
