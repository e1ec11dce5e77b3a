"""Config loading: precedence, env overrides, rejection of unknown keys and bad values, secrets.

The origin's config and the shared machinery; the edge's schema is tested in
tests/edge/test_config.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from regcore.config import ConfigError, load_origin_config, split_hostport
from regcore.sizes import format_size, parse_duration, parse_size

REPO = Path(__file__).resolve().parents[2]

# distribution's cmd/registry/config-example.yml (also what Debian's docker-registry ships).
DISTRIBUTION_EXAMPLE = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""


def write(tmp_path: Path, text: str, name: str = "config.yml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# ----------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10GiB", 10 * 1024**3),
        ("500MB", 500_000_000),
        ("1g", 1024**3),
        ("1048576", 1048576),
        (1048576, 1048576),
        ("4 MiB", 4 * 1024**2),
        ("1.5KiB", 1536),
        ("2kb", 2000),
        ("3Mi", 3 * 1024**2),
        ("7b", 7),
    ],
)
def test_parse_size_accepts_binary_and_decimal_suffixes(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "ten", "10XB", "-1", -5, True, "1.2.3GiB", "GiB"])
def test_parse_size_rejects_bad_input_quoting_it(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(bad)  # type: ignore[arg-type]


def test_format_size_round_trips_exact_multiples() -> None:
    assert format_size(10 * 1024**3) == "10 GiB"
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    for n in (1, 1024, 4 * 1024**2, 3 * 1024**4):
        assert parse_size(format_size(n).replace(" ", "")) == n


def test_parse_duration_go_syntax_and_seconds() -> None:
    assert parse_duration("168h") == 168 * 3600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == pytest.approx(0.25)
    assert parse_duration(60) == 60.0
    assert parse_duration("2.5") == 2.5
    for bad in ("", "10x", "h", "-1s", -3, "1h 2m"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(bad)


# ----------------------------------------------------------------------------- origin
def test_origin_defaults_without_any_source() -> None:
    cfg = load_origin_config(None, {}, {})
    assert cfg.http.addr == "127.0.0.1:5000"
    assert cfg.http.bind == ("127.0.0.1", 5000)
    assert cfg.storage.rootdirectory == "./data/origin"
    assert cfg.storage.delete_enabled is False  # registry:2's default: deletes off
    assert cfg.auth.mode == "none"
    assert cfg.readonly is False
    assert cfg.log.level == "info" and cfg.log.format == "json"
    assert cfg.limits.max_manifest_bytes == 4 * 1024 * 1024
    assert cfg.limits.max_blob_bytes == 0
    assert cfg.metrics_enabled is True
    assert cfg == load_origin_config(None, {}, None)


def test_distribution_example_config_parses(tmp_path: Path) -> None:
    cfg = load_origin_config(write(tmp_path, DISTRIBUTION_EXAMPLE), {}, {})
    assert cfg.version == "0.1"
    assert cfg.log.fields == {"service": "registry"}
    assert cfg.storage.cache == {"blobdescriptor": "inmemory"}
    assert cfg.storage.rootdirectory == "/var/lib/registry"
    assert cfg.http.addr == ":5000"
    assert cfg.http.bind == ("0.0.0.0", 5000)
    assert cfg.http.headers == {"X-Content-Type-Options": ("nosniff",)}
    assert cfg.health.storagedriver_enabled is True
    assert cfg.health.storagedriver_interval == 10.0
    assert cfg.health.storagedriver_threshold == 3


def test_debian_docker_registry_config_with_broken_htpasswd_is_refused() -> None:
    """Debian's sample config points auth.htpasswd.path at a directory: the origin refuses
    to start (naming the key) instead of serving an open registry."""
    path = Path("/etc/docker/registry/config.yml")
    if not path.exists():
        pytest.skip("docker-registry's config.yml not installed")
    with pytest.raises(ConfigError, match=r"auth\.htpasswd\.path") as exc:
        load_origin_config(str(path), {}, {})
    assert exc.value.key == "auth.htpasswd.path"


def test_deploy_origin_example_parses() -> None:
    cfg = load_origin_config(str(REPO / "deploy/config/origin.yml"), {}, {})
    assert cfg.storage.maintenance.uploadpurging.age == 168 * 3600
    assert cfg.http.addr == "0.0.0.0:5000"


def test_precedence_defaults_file_env_override(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "http: {addr: '127.0.0.1:6000'}\nlog: {level: debug}\n"
        "storage: {filesystem: {rootdirectory: /from/file}, delete: {enabled: false}}\n",
    )
    env = {"REGISTRY_HTTP_ADDR": "127.0.0.1:7000", "REGISTRY_LOG_LEVEL": "warn"}
    cfg = load_origin_config(path, env, {"http.addr": "127.0.0.1:8000", "log.level": None})
    assert cfg.http.addr == "127.0.0.1:8000"  # override beats env and file
    assert cfg.log.level == "warning"  # env beats file; None override means "not given"
    assert cfg.storage.rootdirectory == "/from/file"  # file beats default
    assert cfg.storage.delete_enabled is False
    assert cfg.log.format == "json"  # default survives
    only_file = load_origin_config(path, {}, {})
    assert only_file.http.addr == "127.0.0.1:6000"
    nested = load_origin_config(path, {}, {"storage": {"filesystem": {"rootdirectory": "/cli"}}})
    assert nested.storage.rootdirectory == "/cli"
    assert nested.storage.delete_enabled is False  # merged, not replaced


def test_nested_env_overrides_in_distribution_naming() -> None:
    env = {
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/srv/reg",
        "REGISTRY_STORAGE_DELETE_ENABLED": "false",
        "REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED": "true",
        "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE": "2h",
        "REGISTRY_HTTP_TLS_CLIENTCAS": "a.pem,b.pem",
        "REGISTRY_HTTP_HEADERS": "{X-Frame-Options: [DENY]}",
        "QUAYSIDE_LIMITS_MAX_MANIFEST_BYTES": "1MiB",
        "REGISTRY_QUAYSIDE_METRICS_ENABLED": "no",
    }
    cfg = load_origin_config(None, env, {})
    assert cfg.storage.rootdirectory == "/srv/reg"
    assert cfg.storage.delete_enabled is False
    assert cfg.readonly is True
    assert cfg.storage.maintenance.uploadpurging.age == 7200
    assert cfg.http.tls.clientcas == ("a.pem", "b.pem")
    assert cfg.http.headers == {"X-Frame-Options": ("DENY",)}
    assert cfg.limits.max_manifest_bytes == 1024 * 1024
    assert cfg.metrics_enabled is False


def test_readonly_nested_and_shorthand_forms(tmp_path: Path) -> None:
    nested = "storage:\n  maintenance:\n    readonly:\n      enabled: true\n"
    assert load_origin_config(write(tmp_path, nested), {}, {}).readonly is True
    short = "storage:\n  maintenance:\n    readonly: true\n"
    assert load_origin_config(write(tmp_path, short, "b.yml"), {}, {}).readonly is True
    env_section = {"REGISTRY_STORAGE_MAINTENANCE_READONLY": "{enabled: true}"}
    assert load_origin_config(None, env_section, {}).readonly is True
    # a leaf variable beats its section variable
    both = {**env_section, "REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED": "false"}
    assert load_origin_config(None, both, {}).readonly is False


@pytest.mark.parametrize(
    ("text", "dotted"),
    [
        ("storage:\n  filesystem:\n    rootdir: /x\n", "storage.filesystem.rootdir"),
        ("http:\n  adr: ':5000'\n", "http.adr"),
        ("storage:\n  s3:\n    bucket: b\n", "storage.s3"),
        ("quayside:\n  limits:\n    max_manifest: 1\n", "quayside.limits.max_manifest"),
        (
            "storage:\n  maintenance:\n    readonly:\n      enable: true\n",
            "storage.maintenance.readonly.enable",
        ),
    ],
)
def test_unknown_key_rejected_with_full_dotted_path(tmp_path: Path, text: str, dotted: str) -> None:
    path = write(tmp_path, "version: 0.1\n" + text)
    with pytest.raises(ConfigError) as info:
        load_origin_config(path, {}, {})
    assert f"unknown key '{dotted}'" in str(info.value)
    assert path in str(info.value)
    assert info.value.key == dotted


@pytest.mark.parametrize(
    ("text", "dotted", "fragment"),
    [
        ("version: 0.2\n", "version", "unsupported version"),
        ("log: {level: loud}\n", "log.level", "must be one of"),
        ("log: {format: xml}\n", "log.format", "must be one of"),
        ("http: {addr: localhost}\n", "http.addr", "HOST:PORT"),
        ("http: {addr: 'h:99999'}\n", "http.addr", "0-65535"),
        ("http: {host: 'ftp://x'}\n", "http.host", "http(s)://"),
        ("storage: {delete: {enabled: maybe}}\n", "storage.delete.enabled", "boolean"),
        (
            "quayside: {limits: {max_manifest_bytes: 0}}\n",
            "quayside.limits.max_manifest_bytes",
            "> 0",
        ),
        (
            "quayside: {limits: {max_blob_bytes: lots}}\n",
            "quayside.limits.max_blob_bytes",
            "invalid size",
        ),
        (
            "health: {storagedriver: {interval: soon}}\n",
            "health.storagedriver.interval",
            "invalid duration",
        ),
        ("http: [1, 2]\n", "http", "expected a mapping"),
        ("http: {headers: {'Bad Header': x}}\n", "http.headers.Bad Header", "header name"),
        (
            "http: {tls: {certificate: /nonexistent/cert.pem, key: /nonexistent/key.pem}}\n",
            "http.tls.certificate",
            "does not exist",
        ),
    ],
)
def test_bad_values_rejected_naming_the_key(
    tmp_path: Path, text: str, dotted: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_origin_config(write(tmp_path, text), {}, {})
    assert f": {dotted}: " in str(info.value)
    assert fragment in str(info.value)


def test_tls_certificate_without_key_rejected(tmp_path: Path) -> None:
    cert = write(tmp_path, "x", "cert.pem")
    with pytest.raises(ConfigError, match="together"):
        load_origin_config(None, {}, {"http.tls.certificate": cert})
    key = write(tmp_path, "y", "key.pem")
    cfg = load_origin_config(None, {}, {"http.tls.certificate": cert, "http.tls.key": key})
    assert cfg.http.tls.enabled


def test_malformed_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_origin_config(write(tmp_path, "http: [unclosed\n"), {}, {})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_origin_config(str(tmp_path / "absent.yml"), {}, {})
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_origin_config(write(tmp_path, "- a\n- b\n", "list.yml"), {}, {})


def test_unknown_registry_env_ignored_unknown_quayside_env_rejected() -> None:
    env = {"REGISTRY_SOMETHING_ELSE": "1", "REGISTRY_PROXY_REMOTEURL": "https://x", "HOME": "/"}
    assert load_origin_config(None, env, {}) == load_origin_config(None, {}, {})
    with pytest.raises(ConfigError) as info:
        load_origin_config(None, {"QUAYSIDE_LIMITS_MAX_MANIFEST": "1"}, {})
    assert "QUAYSIDE_LIMITS_MAX_MANIFEST" in str(info.value)
    # the edge's variables do not disturb the origin
    assert load_origin_config(None, {"QUAYSIDE_EDGE_LISTEN": "x"}, {}).http.addr == "127.0.0.1:5000"


def test_bad_env_value_names_variable_and_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_origin_config(None, {"REGISTRY_STORAGE_DELETE_ENABLED": "perhaps"}, {})
    assert "REGISTRY_STORAGE_DELETE_ENABLED" in str(info.value)
    assert "storage.delete.enabled" in str(info.value)


def test_distribution_formatter_alias_and_conflict(tmp_path: Path) -> None:
    cfg = load_origin_config(write(tmp_path, "log: {formatter: text}\n"), {}, {})
    assert cfg.log.format == "text"
    env = {"REGISTRY_LOG_FORMAT": "json"}
    assert (
        load_origin_config(write(tmp_path, "log: {formatter: text}\n"), env, {}).log.format
        == "json"
    )
    with pytest.raises(ConfigError, match="conflicts"):
        load_origin_config(
            write(tmp_path, "log: {formatter: text, format: json}\n", "c.yml"), {}, {}
        )


def test_unknown_override_key_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'http\.listen'"):
        load_origin_config(None, {}, {"http.listen": "x"})


def test_origin_secrets_absent_from_repr(tmp_path: Path) -> None:
    text = "http: {secret: s3cr3t-http}\n"
    cfg = load_origin_config(write(tmp_path, text), {}, {})
    assert cfg.http.secret == "s3cr3t-http"
    assert "s3cr3t-http" not in repr(cfg)


def test_config_objects_are_frozen() -> None:
    cfg = load_origin_config(None, {}, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.http.addr = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.log.fields["a"] = 1  # type: ignore[index]


def test_split_hostport() -> None:
    assert split_hostport("127.0.0.1:0") == ("127.0.0.1", 0)
    assert split_hostport(":5000") == ("", 5000)
    assert split_hostport("[::1]:5001") == ("::1", 5001)
    for bad in ("5000", "host:", "h:port", "::1:5000", "h:70000"):
        with pytest.raises(ValueError):
            split_hostport(bad)


# ----------------------------------------------------------------------------- partly supported
# regcore/configdist.py: what registry:2 keys the origin refuses, and why.
@pytest.mark.parametrize(
    ("text", "dotted"),
    [
        ("storage: {filesystem: {maxthreads: 100}}\n", "storage.filesystem.maxthreads"),
        ("storage: {cache: {blobdescriptor: redis}}\n", "storage.cache.blobdescriptor"),
        ("http: {prefix: /registry/}\n", "http.prefix"),
        ("http: {http2: {disabled: false}}\n", "http.http2.disabled"),
        ("http: {tls: {minimumtls: tls1.0}}\n", "http.tls.minimumtls"),
        ("health: {file: [{file: /tmp/down}]}\n", "health.file"),
        ("health: {http: [{uri: 'http://x'}]}\n", "health.http"),
        ("health: {tcp: [{addr: 'db:5432'}]}\n", "health.tcp"),
        ("log: {hooks: [{type: mail}]}\n", "log.hooks"),
        ("log: {formatter: logstash}\n", "log.formatter"),
    ],
)
def test_unimplemented_distribution_keys_stop_start_up(
    tmp_path: Path, text: str, dotted: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_origin_config(path, {}, {})
    assert str(info.value).startswith(f"{path}: {dotted}: ")
    assert "not supported by Quayside" in str(info.value)
    assert info.value.key == dotted


@pytest.mark.parametrize(
    ("text", "dotted"),
    [
        ("storage: {cache: {layerinfo: inmemory}}\n", "storage.cache.layerinfo"),
        ("http: {debug: {pprof: {enabled: true}}}\n", "http.debug.pprof"),
        ("http: {http2: {enabled: true}}\n", "http.http2.enabled"),
    ],
)
def test_distribution_subkeys_once_stored_raw_are_now_unknown(
    tmp_path: Path, text: str, dotted: str
) -> None:
    with pytest.raises(ConfigError, match=f"unknown key '{dotted}'"):
        load_origin_config(write(tmp_path, text), {}, {})


def test_unimplemented_key_from_the_environment_names_variable_and_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_origin_config(None, {"REGISTRY_STORAGE_FILESYSTEM_MAXTHREADS": "50"}, {})
    message = str(info.value)
    assert "REGISTRY_STORAGE_FILESYSTEM_MAXTHREADS" in message
    assert "storage.filesystem.maxthreads: not supported by Quayside" in message


def test_no_op_distribution_values_accepted(tmp_path: Path) -> None:
    text = """\
storage:
  cache: {blobdescriptor: inmemory, blobdescriptorsize: 10000}
  redirect: {disable: true}
http: {prefix: /, http2: {disabled: true}, tls: {minimumtls: tls1.3}}
log: {reportcaller: true}
"""
    cfg = load_origin_config(write(tmp_path, text), {}, {})
    assert cfg.storage.cache == {"blobdescriptor": "inmemory", "blobdescriptorsize": 10000}
    assert cfg.http.prefix == "/" and cfg.http.tls.minimumtls == "tls1.3"
    assert cfg.log.reportcaller is True
    # filesystem blobs are never redirected, in distribution as here: both values mean that
    assert load_origin_config(None, {"REGISTRY_STORAGE_REDIRECT_DISABLE": "false"}, {})


def test_debug_listener_settings_from_file_and_environment(tmp_path: Path) -> None:
    text = "http: {debug: {addr: 'localhost:5001', prometheus: {enabled: true}}}\n"
    cfg = load_origin_config(write(tmp_path, text), {}, {})
    assert cfg.http.debug.serves_metrics and cfg.http.debug.bind == ("localhost", 5001)
    assert cfg.http.debug.prometheus_path == "/metrics"
    assert cfg.metrics_on_main_port is False
    env = {
        "REGISTRY_HTTP_DEBUG_ADDR": "127.0.0.1:0",
        "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
        "REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH": "/m",
    }
    cfg = load_origin_config(None, env, {})
    assert (cfg.http.debug.addr, cfg.http.debug.prometheus_path) == ("127.0.0.1:0", "/m")
    assert load_origin_config(None, {}, {}).metrics_on_main_port is True


@pytest.mark.parametrize(
    ("settings", "dotted", "fragment"),
    [
        ({"http.debug.addr": "127.0.0.1:5001"}, "http.debug.addr", "not supported by Quayside"),
        ({"http.debug.prometheus.enabled": True}, "http.debug.prometheus.enabled", "needs"),
        (
            {
                "http.debug": {"addr": "127.0.0.1:5001", "prometheus": {"enabled": True}},
                "quayside.metrics.enabled": False,
            },
            "http.debug.prometheus.enabled",
            "conflicts",
        ),
        ({"http.debug.prometheus.path": "metrics"}, "http.debug.prometheus.path", "absolute"),
    ],
)
def test_debug_listener_settings_that_would_do_nothing_are_refused(
    settings: dict[str, object], dotted: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_origin_config(None, {}, settings)
    assert f"{dotted}: " in str(info.value) and fragment in str(info.value)
    assert info.value.key == dotted


def test_storagedriver_interval_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"health\.storagedriver\.interval: must be > 0"):
        load_origin_config(None, {}, {"health.storagedriver.interval": 0})
