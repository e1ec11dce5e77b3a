"""regcore.serving.bind_listeners on real sockets (127.0.0.1): the main listener and an
optional second one are bound; a failure prints ``quayside NAME: cannot listen on WHAT:
REASON`` to stderr, closes what was bound and returns None. The edge and origin ``serve``
turn that into exit status 1 with their own wording."""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from regcore import serving


@pytest.fixture
def busy() -> Iterator[int]:
    """A port on 127.0.0.1 with a listening socket on it: binding it again fails."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


@pytest.fixture
def bound(monkeypatch: pytest.MonkeyPatch) -> list[socket.socket]:
    """Every socket :func:`serving.bind` returns, to check what was closed."""
    sockets: list[socket.socket] = []
    real = serving.bind

    def recording(*args: Any, **kwargs: Any) -> tuple[socket.socket, str]:
        sock, url = real(*args, **kwargs)
        sockets.append(sock)
        return sock, url

    monkeypatch.setattr(serving, "bind", recording)
    return sockets


def test_second_bind_failure_closes_the_first_and_says_why(
    busy: int, bound: list[socket.socket], capsys: pytest.CaptureFixture[str]
) -> None:
    got = serving.bind_listeners(
        "edge",
        serving.Listen("127.0.0.1:0", "127.0.0.1", 0),
        second=serving.Listen(f"metrics.listen 127.0.0.1:{busy}", "127.0.0.1", busy),
    )
    assert got is None
    assert len(bound) == 1 and bound[0].fileno() == -1  # the main socket was closed
    assert capsys.readouterr().err == (
        f"quayside edge: cannot listen on metrics.listen 127.0.0.1:{busy}: Address already in use\n"
    )


def test_main_bind_failure_binds_nothing_else(
    busy: int, bound: list[socket.socket], capsys: pytest.CaptureFixture[str]
) -> None:
    got = serving.bind_listeners(
        "origin",
        serving.Listen(f"127.0.0.1:{busy}", "127.0.0.1", busy),
        second=serving.Listen("http.debug.addr 127.0.0.1:0", "127.0.0.1", 0),
    )
    assert got is None and bound == []
    assert capsys.readouterr().err == (
        f"quayside origin: cannot listen on 127.0.0.1:{busy}: Address already in use\n"
    )


def test_tls_context_failure_is_a_listen_failure(
    tmp_path: Path, bound: list[socket.socket], capsys: pytest.CaptureFixture[str]
) -> None:
    def missing() -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tmp_path / "missing.crt", tmp_path / "missing.key")
        return ctx

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")

    def malformed() -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(garbage, garbage)
        return ctx

    main = serving.Listen(":5000", "127.0.0.1", 0)
    assert serving.bind_listeners("edge", main, ssl_context=missing) is None
    assert capsys.readouterr().err == (
        "quayside edge: cannot listen on :5000: No such file or directory\n"
    )
    assert serving.bind_listeners("edge", main, ssl_context=malformed) is None
    assert re.fullmatch(
        r"quayside edge: cannot listen on :5000: \[SSL\] PEM lib .*\n", capsys.readouterr().err
    )
    assert bound == []


def test_both_bound() -> None:
    got = serving.bind_listeners(
        "edge",
        serving.Listen("main", "127.0.0.1", 0),
        second=serving.Listen("second", "127.0.0.1", 0),
    )
    assert got is not None and got.second is not None and got.ssl_context is None
    try:
        assert got.url == f"http://127.0.0.1:{got.sock.getsockname()[1]}"
        sock, url = got.second
        assert url == f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = web.Application()
        assert got.debug_site(lambda: app) == serving.DebugSite(app, sock, url)
    finally:
        got.sock.close()
        got.second[0].close()


def test_without_second_no_debug_site() -> None:
    got = serving.bind_listeners("origin", serving.Listen("main", "127.0.0.1", 0))
    assert got is not None and got.second is None
    try:

        def never() -> web.Application:
            raise AssertionError("not called")

        assert got.debug_site(never) is None
    finally:
        got.sock.close()


async def test_edge_serve_exits_1_when_metrics_listen_is_taken(
    busy: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.__main__ import serve
    from edge.config import load_edge_config

    config = load_edge_config(
        None,
        {},
        {
            "listen": "127.0.0.1:0",
            "upstreams": ["http://127.0.0.1:9"],
            "cache.dir": str(tmp_path / "cache"),
            "metrics.listen": f"127.0.0.1:{busy}",
        },
    )
    assert await serve(config) == 1
    assert capsys.readouterr().err == (
        f"quayside edge: cannot listen on metrics.listen 127.0.0.1:{busy}: Address already in use\n"
    )


async def test_origin_serve_exits_1_when_the_debug_addr_is_taken(
    busy: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from origin.__main__ import serve
    from regcore.config import load_origin_config

    config = load_origin_config(
        None,
        {},
        {
            "http.addr": "127.0.0.1:0",
            "storage.filesystem.rootdirectory": str(tmp_path / "root"),
            "http.debug.addr": f"127.0.0.1:{busy}",
            "http.debug.prometheus.enabled": True,
        },
    )
    assert config.http.debug.serves_metrics
    assert await serve(config) == 1
    assert capsys.readouterr().err.endswith(
        f"quayside origin: cannot listen on http.debug.addr 127.0.0.1:{busy}: "
        "Address already in use\n"
    )
