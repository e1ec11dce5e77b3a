"""Choosing the upstream: ``?ns=`` (configured upstreams only), path prefix, default upstream."""

from __future__ import annotations

import pytest

from edge.config import load_edge_config
from edge.routing import Router, ns_of, valid_ns
from regcore import errors


def _router(*upstreams: str, default: str | None = None, extra: dict | None = None) -> Router:
    overrides: dict = {"listen": "127.0.0.1:0", "upstreams": list(upstreams)}
    if default is not None:
        overrides["default_upstream"] = default
    if extra:
        overrides.update(extra)
    return Router.from_config(load_edge_config(None, {}, overrides))


def test_ns_selects_upstream_by_url_host_and_is_echoed() -> None:
    r = _router("hub=https://registry-1.docker.io", "local=http://127.0.0.1:5000")
    route = r.route("team/app", "127.0.0.1:5000")
    assert route.upstream.name == "local"
    assert route.name == "team/app"
    assert route.headers == {"OCI-Namespace": "127.0.0.1:5000"}


def test_ns_selects_upstream_by_name() -> None:
    r = _router("hub=https://registry-1.docker.io", "local=http://127.0.0.1:5000")
    assert r.route("team/app", "local").upstream.name == "local"


def test_ns_selects_upstream_by_hosts_alias() -> None:
    cfg = load_edge_config(
        None,
        {},
        {
            "listen": "127.0.0.1:0",
            "upstreams": [
                {"name": "quay", "url": "http://127.0.0.1:5001", "hosts": ["quay.io"]},
                {"name": "hub", "url": "https://registry-1.docker.io"},
            ],
        },
    )
    r = Router.from_config(cfg)
    assert r.route("org/tool", "Quay.IO").upstream.name == "quay"


@pytest.mark.parametrize("ns", ["docker.io", "registry-1.docker.io", "index.docker.io"])
def test_docker_io_and_registry_1_docker_io_are_the_same_upstream(ns: str) -> None:
    r = _router("local=http://127.0.0.1:5000", "hub=https://registry-1.docker.io")
    route = r.route("alpine", ns)
    assert route.upstream.name == "hub"
    assert route.name == "library/alpine"


def test_unknown_ns_is_refused_naming_the_namespace() -> None:
    r = _router("local=http://127.0.0.1:5000")
    with pytest.raises(errors.NameUnknown) as exc:
        r.route("team/app", "evil.example.com:443")
    assert exc.value.status == 404
    assert "evil.example.com:443" in exc.value.msg
    assert "not configured" in exc.value.msg


def test_path_prefix_selects_upstream_by_name() -> None:
    r = _router("local=http://127.0.0.1:5000", "other=http://127.0.0.1:5002")
    route = r.route("other/team/app")
    assert route.upstream.name == "other"
    assert route.name == "team/app"
    assert route.headers == {}


def test_path_prefix_with_host_port_name() -> None:
    r = _router("http://127.0.0.1:5000", "http://127.0.0.1:5002")
    route = r.route("127.0.0.1:5002/team/app")
    assert (route.upstream.name, route.name) == ("127.0.0.1:5002", "team/app")


def test_bare_upstream_name_is_a_repository_of_the_default() -> None:
    r = _router("local=http://127.0.0.1:5000", "other=http://127.0.0.1:5002")
    route = r.route("other")
    assert (route.upstream.name, route.name) == ("local", "other")


def test_default_upstream_is_first_or_configured() -> None:
    assert _router("a=http://127.0.0.1:1", "b=http://127.0.0.1:2").route("x/y").upstream.name == "a"
    r = _router("a=http://127.0.0.1:1", "b=http://127.0.0.1:2", default="b")
    assert r.route("x/y").upstream.name == "b"


def test_docker_hub_default_normalises_one_segment_names() -> None:
    r = _router("https://registry-1.docker.io")
    assert r.route("alpine").name == "library/alpine"
    assert r.route("bitnami/redis").name == "bitnami/redis"
    assert r.route("library/alpine").name == "library/alpine"


def test_non_hub_default_keeps_one_segment_names() -> None:
    r = _router("local=http://127.0.0.1:5000")
    assert r.route("alpine").name == "alpine"


def test_invalid_name_after_prefix_is_name_invalid() -> None:
    r = _router("local=http://127.0.0.1:5000", "other=http://127.0.0.1:5002")
    with pytest.raises(errors.NameInvalid):
        r.route("other/Team/App")
    with pytest.raises(errors.NameInvalid):
        r.route("127.0.0.1:9/x")


def test_ns_of_ignores_empty_values() -> None:
    assert ns_of({"ns": ""}) is None
    assert ns_of({}) is None
    assert ns_of({"ns": "docker.io"}) == "docker.io"


@pytest.mark.parametrize(
    "ns",
    ["\x00", "local\x00", "local\n", "\r\nX-Evil: 1", "\x7f", " local", "l\u00f6cal", "a" * 256],
)
def test_ns_that_could_not_be_echoed_is_name_invalid(ns: str) -> None:
    """An ``ns`` must be a registry host or upstream name: visible ASCII, at most 255
    characters. Anything else (control characters, spaces, non-ASCII) is the client's
    mistake, refused before it can reach a header."""
    with pytest.raises(errors.NameInvalid) as exc:
        ns_of({"ns": ns})
    assert exc.value.status == 400
    assert not valid_ns(ns)


@pytest.mark.parametrize("ns", ["docker.io", "127.0.0.1:5000", "[::1]:5000", "my_mirror-1"])
def test_ns_of_keeps_hosts_and_names(ns: str) -> None:
    assert ns_of({"ns": ns}) == ns and valid_ns(ns)
