"""The edge's config (edge/config.py, edge/upstreamconfig.py) on regcore's config machinery:
precedence, env overrides, rejection of unknown keys and bad values, secrets. Moved verbatim
from tests/regcore/test_config.py with the modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge.config import EdgeConfig, load_edge_config
from edge.upstreamconfig import UpstreamConfig, parse_upstream_arg
from regcore.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "config.yml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


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


def test_edge_blob_size_limit_is_refused_naming_the_key(tmp_path: Path) -> None:
    """limits.max_blob_bytes did nothing on the edge: anything but 0 now stops start-up."""
    up = {"upstreams": ["http://127.0.0.1:5000"]}
    path = write(tmp_path, "limits: {max_blob_bytes: 1GiB}\n")
    with pytest.raises(ConfigError) as info:
        load_edge_config(path, {}, up)
    assert str(info.value).startswith(f"{path}: limits.max_blob_bytes: ")
    assert "not supported by Quayside" in str(info.value)
    env = {"QUAYSIDE_EDGE_LIMITS_MAX_BLOB_BYTES": "5MiB"}
    with pytest.raises(ConfigError, match="QUAYSIDE_EDGE_LIMITS_MAX_BLOB_BYTES"):
        load_edge_config(None, env, up)
    assert load_edge_config(None, {"QUAYSIDE_EDGE_LIMITS_MAX_BLOB_BYTES": "0"}, up)


def test_edge_metrics_listener_settings() -> None:
    up = {"upstreams": ["http://127.0.0.1:5000"]}
    cfg = load_edge_config(None, {}, up)
    assert cfg.metrics_on_main_port and cfg.metrics_listen is None
    env = {"QUAYSIDE_EDGE_METRICS_LISTEN": "127.0.0.1:9101", "QUAYSIDE_EDGE_METRICS_PATH": "/m"}
    cfg = load_edge_config(None, env, up)
    assert cfg.metrics_bind == ("127.0.0.1", 9101) and cfg.metrics_path == "/m"
    assert not cfg.metrics_on_main_port
    assert not load_edge_config(None, {}, {**up, "metrics.enabled": False}).metrics_on_main_port
    with pytest.raises(ConfigError, match=r"metrics\.listen: conflicts with metrics\.enabled"):
        load_edge_config(None, env, {**up, "metrics.enabled": False})
    with pytest.raises(ConfigError, match=r"metrics\.path: expected an absolute"):
        load_edge_config(None, {}, {**up, "metrics.path": "m"})
