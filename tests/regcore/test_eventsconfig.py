"""``notifications:`` (distribution's schema) and ``quayside.replication``: every key does what
it says, bad ones stop start-up with the key named, secrets stay out of ``repr``."""

from __future__ import annotations

from pathlib import Path

import pytest

from regcore.config import ConfigError, load_origin_config


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
