"""``notifications:`` (distribution's schema) and ``quayside.replication``: every key does what
it says, bad ones stop start-up with the key named, secrets stay out of ``repr``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.clientcerts import issue_client_cert
from regcore.auth.tlscerts import init_certs
from regcore.config import ConfigError, load_origin_config
from regcore.tlsclient import ClientTLS


def load(tmp: Path, text: str, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp / "config.yml"
    path.write_text(text)
    return load_origin_config(
        str(path), environ or {}, {"storage.filesystem.rootdirectory": str(tmp)}
    )


FULL = """
notifications:
  events: {includereferences: true}
  endpoints:
    - name: hook
      url: https://hooks.example/registry?token=s3cret
      headers: {Authorization: [Bearer s3cret-header], X-One: single}
      timeout: 500ms
      threshold: 3
      backoff: 2s
      ignoredmediatypes: [application/octet-stream]
      ignore: {mediatypes: [application/vnd.oci.image.config.v1+json], actions: [pull]}
    - name: spare
      url: http://127.0.0.1:9/
      disabled: true
"""


def test_every_endpoint_key_is_read(tmp_path: Path) -> None:
    cfg = load(tmp_path, FULL).notifications
    hook, spare = cfg.endpoints
    assert cfg.includereferences is True
    assert (hook.timeout, hook.threshold, hook.backoff) == (0.5, 3, 2.0)
    assert hook.headers == {"Authorization": ("Bearer s3cret-header",), "X-One": ("single",)}
    assert hook.ignored_mediatypes == {
        "application/octet-stream",
        "application/vnd.oci.image.config.v1+json",
    }
    assert hook.ignores("pull", None) and hook.ignores("push", "application/octet-stream")
    assert not hook.ignores("push", "application/vnd.oci.image.manifest.v1+json")
    assert spare.disabled and cfg.active == (hook,)
    assert cfg.directory == str(tmp_path / "quayside" / "notifications")
    assert "s3cret" not in repr(cfg)


def test_defaults_are_distributions(tmp_path: Path) -> None:
    cfg = load(tmp_path, "notifications: {endpoints: [{name: a, url: 'http://h/'}]}\n")
    (ep,) = cfg.notifications.endpoints
    assert (ep.timeout, ep.threshold, ep.backoff, ep.disabled) == (1.0, 10, 1.0, False)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("notifications: {endpoints: [{url: 'http://h/'}]}", "notifications.endpoints[0].name"),
        ("notifications: {endpoints: [{name: a}]}", "notifications.endpoints[0].url"),
        (
            "notifications: {endpoints: [{name: a, url: 'ftp://h/'}]}",
            "notifications.endpoints[0].url",
        ),
        (
            "notifications: {endpoints: [{name: a, url: 'http://h/', ignore: {actions: [x]}}]}",
            "notifications.endpoints[0].ignore.actions",
        ),
        (
            "notifications: {endpoints: [{name: a, url: 'http://h/'}, {name: a, url: 'http://i/'}]}",
            "notifications.endpoints[1].name",
        ),
        (
            "notifications: {endpoints: [{name: a, url: 'http://h/', timeout: 0}]}",
            "notifications.endpoints[0].timeout",
        ),
        ("notifications: {sinks: []}", "notifications.sinks"),
        (
            "quayside: {replication: {targets: [{name: t, url: 'http://h'}]}}",
            "quayside.replication.targets[0].repositories",
        ),
        (
            "quayside: {replication: {targets: [{name: t, url: 'http://h', repositories: ['*'], username: u}]}}",
            "quayside.replication.targets[0].password_file",
        ),
        (
            "quayside: {replication: {targets: [{name: t, url: 'http://h', repositories: ['*'], password_file: /nonexistent/pw}]}}",
            "quayside.replication.targets[0].password_file",
        ),
    ],
)
def test_bad_keys_named(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text + "\n")
    assert exc.value.key == key, exc.value


def test_replication_targets_and_environment(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    text = f"""
quayside:
  replication:
    reconcile: {{interval: 10m}}
    targets:
      - name: dr
        url: http://127.0.0.1:5001
        username: rep
        password_file: {pw}
        repositories: ["team/*", base]
        replicate_deletes: true
"""
    cfg = load(tmp_path, text).replication
    (t,) = cfg.targets
    assert (t.name, t.username, t.password_file, t.replicate_deletes) == (
        "dr",
        "rep",
        str(pw),
        True,
    )
    assert t.repositories == ("team/*", "base") and cfg.reconcile_interval == 600.0
    assert "hunter2" not in repr(cfg)
    env = {"REGISTRY_NOTIFICATIONS_ENDPOINTS": "[{name: e, url: 'http://127.0.0.1:1/'}]"}
    assert [e.name for e in load(tmp_path, "", env).notifications.endpoints] == ["e"]


# -- tls: on replication targets and notification endpoints ---------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A private CA as ``quayside certs init`` makes it, a client certificate it signs, and a
    key of another pair."""
    files = init_certs(tmp_path / "certs", ["127.0.0.1"])
    cert, key = issue_client_cert(files.ca_cert, files.ca_key, tmp_path / "client", "rep")
    _, other_key = issue_client_cert(files.ca_cert, files.ca_key, tmp_path / "other", "x")
    return {"ca": files.ca_cert, "cert": cert, "key": key, "other_key": other_key}


def _target(tls: str, url: str = "https://dr.example:5000") -> str:
    return (
        "quayside: {replication: {targets: "
        f"[{{name: dr, url: '{url}', repositories: ['*'], tls: {tls}}}]}}}}\n"
    )


def _endpoint(tls: str, url: str = "https://hooks.example/x") -> str:
    return f"notifications: {{endpoints: [{{name: hook, url: '{url}', tls: {tls}}}]}}\n"


def test_tls_keys_of_targets_and_endpoints_are_read(tmp_path: Path, pki: dict[str, Path]) -> None:
    tls = (
        f"{{ca: '{pki['ca']}', certificate: '{pki['cert']}', key: '{pki['key']}', "
        "servername: Registry.DR.internal, insecureskipverify: false}"
    )
    cfg = load(tmp_path, _target(tls) + _endpoint(f"{{ca: '{pki['ca']}'}}"))
    (target,) = cfg.replication.targets
    assert target.tls == ClientTLS(
        ca=str(pki["ca"]),
        certificate=str(pki["cert"]),
        key=str(pki["key"]),
        servername="registry.dr.internal",
        insecureskipverify=False,
    )
    (hook,) = cfg.notifications.endpoints
    assert hook.tls == ClientTLS(ca=str(pki["ca"]))
    assert load(tmp_path, _target("{insecureskipverify: true}")).replication.targets[
        0
    ].tls == ClientTLS(insecureskipverify=True)
    plain = load(
        tmp_path,
        "quayside: {replication: {targets: [{name: a, url: 'http://h', repositories: ['*']}]}}\n",
    )
    assert plain.replication.targets[0].tls is None


def test_tls_in_the_yaml_valued_environment_variables(tmp_path: Path, pki: dict[str, Path]) -> None:
    env = {
        "QUAYSIDE_REPLICATION_TARGETS": (
            f"[{{name: dr, url: 'https://dr:5000', repositories: ['*'], "
            f"tls: {{ca: '{pki['ca']}', certificate: '{pki['cert']}', key: '{pki['key']}'}}}}]"
        ),
        "REGISTRY_NOTIFICATIONS_ENDPOINTS": (
            f"[{{name: e, url: 'https://h/', tls: {{ca: '{pki['ca']}'}}}}]"
        ),
    }
    cfg = load(tmp_path, "", env)
    assert cfg.replication.targets[0].tls is not None
    assert cfg.replication.targets[0].tls.key == str(pki["key"])
    assert cfg.notifications.endpoints[0].tls == ClientTLS(ca=str(pki["ca"]))
    env["QUAYSIDE_REPLICATION_TARGETS"] = env["QUAYSIDE_REPLICATION_TARGETS"].replace(
        str(pki["ca"]), "/nonexistent/ca.crt"
    )
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, "", env)
    assert exc.value.key == "quayside.replication.targets[0].tls.ca"


T = "quayside.replication.targets[0].tls"
E = "notifications.endpoints[0].tls"


@pytest.mark.parametrize(
    ("case", "key", "says"),
    [
        ("missing ca", f"{T}.ca", "does not exist"),
        ("ca not pem", f"{T}.ca", "no usable PEM certificate"),
        ("certificate without key", f"{T}.key", "given together"),
        ("key without certificate", f"{T}.certificate", "given together"),
        ("key of another certificate", f"{T}.key", "does not match the certificate"),
        ("unreadable key", f"{T}.key", "not readable"),
        ("servername with a port", f"{T}.servername", "not a host name"),
        ("unknown key", f"{T}.cafile", "unknown key"),
        ("tls on http", T, "https://"),
        ("endpoint: missing ca", f"{E}.ca", "does not exist"),
        ("endpoint: key of another certificate", f"{E}.key", "does not match"),
    ],
)
def test_tls_config_errors_name_the_dotted_key(
    tmp_path: Path, pki: dict[str, Path], case: str, key: str, says: str
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    unreadable = tmp_path / "unreadable.key"
    unreadable.write_bytes(pki["key"].read_bytes())
    unreadable.chmod(0)
    mismatched = f"{{certificate: '{pki['cert']}', key: '{pki['other_key']}'}}"
    text = {
        "missing ca": _target("{ca: /nonexistent/ca.crt}"),
        "ca not pem": _target(f"{{ca: '{junk}'}}"),
        "certificate without key": _target(f"{{certificate: '{pki['cert']}'}}"),
        "key without certificate": _target(f"{{key: '{pki['key']}'}}"),
        "key of another certificate": _target(mismatched),
        "unreadable key": _target(f"{{certificate: '{pki['cert']}', key: '{unreadable}'}}"),
        "servername with a port": _target("{servername: 'dr.example:5000'}"),
        "unknown key": _target(f"{{cafile: '{pki['ca']}'}}"),
        "tls on http": _target(f"{{ca: '{pki['ca']}'}}", url="http://dr.example:5000"),
        "endpoint: missing ca": _endpoint("{ca: /nonexistent/ca.crt}"),
        "endpoint: key of another certificate": _endpoint(mismatched),
    }[case]
    if case == "unreadable key" and os.access(unreadable, os.R_OK):
        pytest.skip("running as root: mode 0 files stay readable")
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    assert exc.value.key == key, exc.value
    assert says in str(exc.value)
    for secret in (pki["key"], pki["other_key"]):  # no key material in the message
        body = secret.read_text().splitlines()[1]
        assert body not in str(exc.value)
