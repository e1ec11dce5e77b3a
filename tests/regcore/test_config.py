"""Config loading: precedence, env overrides, rejection of unknown keys and bad values, secrets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from regcore.config import (
    ConfigError,
    EdgeConfig,
    UpstreamConfig,
    load_edge_config,
    load_origin_config,
    parse_upstream_arg,
    split_hostport,
)
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


# ----------------------------------------------------------------------------- edge
def test_edge_defaults_with_one_cli_upstream() -> None:
    cfg = load_edge_config(None, {}, {"upstreams": ["http://127.0.0.1:5000"]})
    assert cfg.listen == "127.0.0.1:5001"
    assert cfg.advertise == "http://127.0.0.1:5001"
    assert cfg.cache.dir == "./data/edge"
    assert cfg.cache.size == 10 * 1024**3
    assert cfg.tags.ttl == 60 and cfg.tags.revalidate_timeout == 3
    assert cfg.redis.url is None and not cfg.redis.enabled and cfg.redis.lock_ttl == 15
    (up,) = cfg.upstreams
    assert up.name == "127.0.0.1:5000" and up.url == "http://127.0.0.1:5000"
    assert (up.connect_timeout, up.read_timeout, up.retries) == (5.0, 30.0, 3)
    assert up.docker_hub is False
    assert cfg.default() is up


def test_edge_requires_an_upstream() -> None:
    with pytest.raises(ConfigError, match="at least one upstream"):
        load_edge_config(None, {}, {})


def test_edge_file_with_list_of_upstreams_and_secret_files(tmp_path: Path) -> None:
    pw = write(tmp_path, "hub-pa55word\n", "hub.pw")
    token = write(tmp_path, "ghcr-t0ken\n", "ghcr.token")
    text = f"""
listen: 0.0.0.0:6001
advertise: http://edge-a:6001
cache: {{dir: {tmp_path}/cache, size: 2GiB}}
tags: {{ttl: 2m, revalidate_timeout: 1.5}}
redis: {{url: 'redis://:r3dis-pw@127.0.0.1:6379/0', lock_ttl: 30}}
default_upstream: origin
upstreams:
  - name: hub
    url: https://registry-1.docker.io
    username: bot
    password_file: {pw}
    hosts: [Index.Docker.IO]
    timeouts: {{connect: 2, read: 10s}}
    retries: 0
  - name: origin
    url: http://127.0.0.1:5000/
  - name: ghcr
    url: https://ghcr.io
    token_file: {token}
"""
    cfg = load_edge_config(write(tmp_path, text), {}, {})
    assert cfg.bind == ("0.0.0.0", 6001)
    assert cfg.advertise == "http://edge-a:6001"
    assert cfg.cache.size == 2 * 1024**3
    assert cfg.tags.ttl == 120 and cfg.tags.revalidate_timeout == 1.5
    assert cfg.redis.lock_ttl == 30
    hub, origin, ghcr = cfg.upstreams
    assert hub.docker_hub is True and origin.docker_hub is False
    assert (hub.connect_timeout, hub.read_timeout, hub.retries) == (2.0, 10.0, 0)
    assert hub.read_password() == "hub-pa55word"
    assert ghcr.read_token() == "ghcr-t0ken" and ghcr.read_password() is None
    assert origin.url == "http://127.0.0.1:5000"
    assert cfg.default() is origin
    # ns matching: name, extra hosts (case-insensitive), URL host, docker.io for Docker Hub
    assert cfg.upstream_for_ns("hub") is hub
    assert cfg.upstream_for_ns("docker.io") is hub
    assert cfg.upstream_for_ns("index.docker.io") is hub
    assert cfg.upstream_for_ns("registry-1.docker.io") is hub
    assert cfg.upstream_for_ns("127.0.0.1:5000") is origin
    assert cfg.upstream_for_ns("quay.io") is None
    assert "r3dis-pw" not in repr(cfg)


def test_edge_mapping_form_of_upstreams(tmp_path: Path) -> None:
    text = """
upstreams:
  docker.io:
    url: https://registry-1.docker.io
  local: http://127.0.0.1:5000
"""
    cfg = load_edge_config(write(tmp_path, text), {}, {})
    assert [u.name for u in cfg.upstreams] == ["docker.io", "local"]
    assert cfg.upstreams[0].docker_hub is True
    assert cfg.default().name == "docker.io"


def test_edge_precedence_and_env(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "listen: 127.0.0.1:6001\ncache: {size: 1GiB, dir: /file}\n"
        "upstreams: [{name: a, url: 'http://127.0.0.1:1'}]\n",
    )
    env = {
        "QUAYSIDE_EDGE_CACHE_SIZE": "500MB",
        "QUAYSIDE_EDGE_LISTEN": "127.0.0.1:6002",
        "QUAYSIDE_EDGE_REDIS_URL": "redis://127.0.0.1:6379",
        "QUAYSIDE_EDGE_TAGS_TTL": "5",
        "REGISTRY_HTTP_ADDR": "ignored by the edge",
    }
    cfg = load_edge_config(path, env, {"listen": "127.0.0.1:6003", "cache.dir": None})
    assert cfg.listen == "127.0.0.1:6003"
    assert cfg.advertise == "http://127.0.0.1:6003"
    assert cfg.cache.size == 500_000_000
    assert cfg.cache.dir == "/file"
    assert cfg.redis.url == "redis://127.0.0.1:6379"
    assert cfg.tags.ttl == 5
    assert [u.name for u in cfg.upstreams] == ["a"]
    env_up = {"QUAYSIDE_EDGE_UPSTREAMS": "b=http://127.0.0.1:2, http://127.0.0.1:3"}
    cfg = load_edge_config(path, env_up, {})
    assert [u.name for u in cfg.upstreams] == ["b", "127.0.0.1:3"]  # replaces the file's list
    cli = load_edge_config(path, env_up, {"upstreams": ["c=http://127.0.0.1:4"]})
    assert [u.name for u in cli.upstreams] == ["c"]


def test_edge_manifest_ttl_is_an_alias_of_tags_ttl(tmp_path: Path) -> None:
    up = {"upstreams": ["http://127.0.0.1:1"]}
    cfg = load_edge_config(write(tmp_path, "cache: {manifest_ttl: 7}\n"), {}, up)
    assert cfg.tags.ttl == 7
    env = {"QUAYSIDE_EDGE_CACHE_MANIFEST_TTL": "9"}
    assert load_edge_config(write(tmp_path, "tags: {ttl: 7}\n", "b.yml"), env, up).tags.ttl == 9
    with pytest.raises(ConfigError, match="conflicts"):
        load_edge_config(
            write(tmp_path, "tags: {ttl: 7}\ncache: {manifest_ttl: 8}\n", "c.yml"), {}, up
        )


def test_edge_port_zero_leaves_advertise_unset() -> None:
    cfg = load_edge_config(None, {}, {"listen": "127.0.0.1:0", "upstreams": ["http://h:1"]})
    assert cfg.advertise is None
    wild = load_edge_config(None, {}, {"listen": "0.0.0.0:7000", "upstreams": ["http://h:1"]})
    assert wild.advertise == "http://127.0.0.1:7000"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"listen": "nowhere"}, "listen: invalid address"),
        ({"advertise": "edge-a:5001"}, "advertise: invalid URL"),
        ({"cache.size": "0"}, "cache.size: size must be > 0"),
        ({"cache.size": "huge"}, "cache.size: invalid size"),
        ({"tags.ttl": -1}, "tags.ttl: invalid duration"),
        ({"tags.revalidate_timeout": 0}, "tags.revalidate_timeout: must be > 0"),
        ({"redis.url": "http://127.0.0.1:6379"}, "redis.url: invalid Redis URL"),
        ({"redis.lock_ttl": 0}, "redis.lock_ttl: must be > 0"),
        ({"default_upstream": "nope"}, "default_upstream: 'nope' is not the name"),
        ({"upstreams": ["a=http://h:1", "a=http://h:2"]}, "duplicate name 'a'"),
        ({"upstreams": ["a=http://h:1", "b=http://h:1"]}, "'h:1' selects both 'a' and 'b'"),
        ({"upstreams": ["ftp://h"]}, "upstreams[0]: invalid URL"),
        (
            {"upstreams": [{"url": "http://h:1", "retries": -1}]},
            "upstreams[0].retries: must be >= 0",
        ),
        ({"upstreams": [{"url": "http://h:1", "passwd": "x"}]}, "upstreams[0].passwd: unknown key"),
        ({"upstreams": [{"name": "a"}]}, "upstreams[0].url: required"),
        (
            {"upstreams": [{"url": "http://h:1", "password_file": "/nonexistent/pw"}]},
            "upstreams[0].password_file: file '/nonexistent/pw' does not exist",
        ),
        (
            {"upstreams": [{"url": "http://h:1", "timeouts": {"connect": 0}}]},
            "upstreams[0].timeouts.connect: must be > 0",
        ),
        ({"upstreams": "a=http://h:1", "cache": {"sise": 1}}, "unknown key 'cache.sise'"),
    ],
)
def test_edge_bad_values_name_the_key(overrides: dict[str, object], fragment: str) -> None:
    overrides.setdefault("upstreams", ["http://127.0.0.1:1"])
    with pytest.raises(ConfigError) as info:
        load_edge_config(None, {}, overrides)
    assert fragment in str(info.value)


def test_edge_unknown_quayside_edge_env_rejected() -> None:
    with pytest.raises(ConfigError, match="QUAYSIDE_EDGE_CACHESIZE"):
        load_edge_config(None, {"QUAYSIDE_EDGE_CACHESIZE": "1GiB"}, {"upstreams": ["http://h:1"]})
    # origin's own QUAYSIDE_* variables are not the edge's business
    cfg = load_edge_config(None, {"QUAYSIDE_LIMITS_X": "1"}, {"upstreams": ["http://h:1"]})
    assert cfg.listen == "127.0.0.1:5001"


def test_parse_upstream_arg_forms() -> None:
    assert parse_upstream_arg("http://127.0.0.1:5000").name == "127.0.0.1:5000"
    named = parse_upstream_arg("docker.io=https://registry-1.docker.io")
    assert (named.name, named.url, named.docker_hub) == (
        "docker.io",
        "https://registry-1.docker.io",
        True,
    )
    hub = parse_upstream_arg("https://registry-1.docker.io")
    assert hub.docker_hub is True and "docker.io" in hub.match_names
    creds = parse_upstream_arg("priv=https://bot:s3cret@reg.example:8443/")
    assert (creds.username, creds.password) == ("bot", "s3cret")
    assert creds.url == "https://reg.example:8443"
    assert "s3cret" not in repr(creds)
    q = parse_upstream_arg("https://reg.example/path?x=a=b")  # '=' after the scheme is not a name
    assert q.name == "reg.example"
    for bad in ("", "registry-1.docker.io", "a b=http://h", "=http://h", "x=ftp://h"):
        with pytest.raises(ConfigError, match="--upstream"):
            parse_upstream_arg(bad)


def test_upstream_secrets_absent_from_repr_of_whole_config(tmp_path: Path) -> None:
    text = (
        "upstreams:\n  - name: a\n    url: http://127.0.0.1:1\n    username: u\n"
        "    password: Up5tream-Secret\n"
        "redis: {url: 'redis://default:Red1s-Secret@127.0.0.1:6379'}\n"
    )
    cfg = load_edge_config(write(tmp_path, text), {}, {})
    assert cfg.upstreams[0].read_password() == "Up5tream-Secret"
    assert cfg.redis.url is not None and "Red1s-Secret" in cfg.redis.url
    for shown in (repr(cfg), str(cfg), repr(cfg.upstreams), repr(cfg.redis)):
        assert "Up5tream-Secret" not in shown
        assert "Red1s-Secret" not in shown


def test_edge_config_constructed_directly() -> None:
    up = UpstreamConfig(name="docker.io", url="https://registry-1.docker.io")
    cfg = EdgeConfig(upstreams=(up,))
    assert up.docker_hub is True
    assert cfg.default() is up and cfg.upstream("docker.io") is up
    with pytest.raises(KeyError):
        cfg.upstream("other")


def test_deploy_edge_example_parses(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "deploy/config/edge.yml").read_text())
    for up in data["upstreams"]:  # point the example's secret files at real ones
        for key in ("password_file", "token_file"):
            if key in up:
                up[key] = write(tmp_path, "secret", f"{up['name']}.{key}")
    cfg = load_edge_config(write(tmp_path, yaml.safe_dump(data)), {}, {})
    assert cfg.default().name == "docker.io"
    assert cfg.upstream_for_ns("docker.io") is cfg.upstreams[0]
    assert cfg.cache.size == 50 * 1024**3
