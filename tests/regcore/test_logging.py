"""Structured logging: JSON lines that parse, extras kept, secrets redacted, aiohttp access log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from regcore.logging import JSONAccessLogger, RedactingFilter, setup_logging
from regcore.redaction import redact, redact_headers, redact_url


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    handler = setup_logging("debug", "json", stream=buf)
    yield buf
    root.removeHandler(handler)
    root.setLevel(old_level)


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_parse_with_fields_and_extras(stream: io.StringIO) -> None:
    log = logging.getLogger("quayside.test")
    log.info("fill done for %s", "sha256:abc", extra={"digest": "sha256:abc", "bytes": 1234})
    log.debug("multi\nline message", extra={"obj": object()})
    first, second = lines(stream)
    assert first["level"] == "info"
    assert first["logger"] == "quayside.test"
    assert first["msg"] == "fill done for sha256:abc"
    assert first["digest"] == "sha256:abc" and first["bytes"] == 1234
    assert isinstance(first["ts"], str) and first["ts"].endswith("Z") and "T" in first["ts"]
    assert second["msg"] == "multi\nline message"  # one record is one line
    assert str(second["obj"]).startswith("<object")


def test_exception_is_included_and_redacted(stream: io.StringIO) -> None:
    try:
        raise RuntimeError("upstream said Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.secret")
    except RuntimeError:
        logging.getLogger("quayside.test").exception("request failed")
    (rec,) = lines(stream)
    assert "RuntimeError" in str(rec["exc"])
    assert "eyJhbGciOiJIUzI1NiJ9" not in stream.getvalue()


def test_level_filtering_and_idempotent_setup() -> None:
    buf1, buf2 = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    old = root.level
    try:
        setup_logging("warn", "json", stream=buf1)
        h = setup_logging("warning", "json", stream=buf2)  # replaces the first handler
        log = logging.getLogger("quayside.levels")
        log.info("hidden")
        log.warning("shown")
        assert buf1.getvalue() == ""
        assert [r["msg"] for r in lines(buf2)] == ["shown"]
        assert sum(1 for x in root.handlers if getattr(x, "_quayside", False)) == 1
    finally:
        root.removeHandler(h)
        root.setLevel(old)
    with pytest.raises(ValueError, match="log level"):
        setup_logging("loud")
    with pytest.raises(ValueError, match="log format"):
        setup_logging("info", "xml")


def test_text_format_is_one_readable_line() -> None:
    buf = io.StringIO()
    root = logging.getLogger()
    old = root.level
    h = setup_logging("info", "text", stream=buf)
    try:
        logging.getLogger("quayside.text").info("hello", extra={"n": 3, "pw": "password=hunter2"})
    finally:
        root.removeHandler(h)
        root.setLevel(old)
    out = buf.getvalue()
    assert "info" in out and "quayside.text: hello" in out and "n=3" in out
    assert "hunter2" not in out


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET https://bob:hunter2@registry.example/v2/", "hunter2"),
        ("Authorization: Bearer abcdef123456", "abcdef123456"),
        ("authorization=Basic Ym9iOmh1bnRlcjI=", "Ym9iOmh1bnRlcjI="),
        ("headers {'Authorization': 'Bearer tok3n-value'}", "tok3n-value"),
        ("sent bearer QWxhZGRpbjpvcGVu to upstream", "QWxhZGRpbjpvcGVu"),
        ("login password=s3cret&user=bob", "s3cret"),
        ('{"password": "s3cret"}', "s3cret"),
        ("redirect to https://s3/x?X-Amz-Signature=deadbeef&X-Amz-Date=1", "deadbeef"),
        ("token fetched: https://auth/token?access_token=abc.def", "abc.def"),
        ("redis://:r3dis@127.0.0.1:6379/0", "r3dis"),
    ],
)
def test_redact_masks_secrets(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "***" in out
    assert redact(out) == out  # idempotent


def test_redact_leaves_ordinary_text_alone() -> None:
    for text in (
        "GET /v2/library/alpine/blobs/sha256:abc 200",
        "fill started digest=sha256:0123 size=1234",
        "pulled https://registry.example/v2/ ok",
    ):
        assert redact(text) == text


def test_redact_url_and_headers() -> None:
    assert (
        redact_url("https://u:p@h:5000/v2/x?token=abc&n=1")
        == "https://u:***@h:5000/v2/x?token=***&n=1"
    )
    assert redact_url("https://h/v2/x?n=1&last=b") == "https://h/v2/x?n=1&last=b"
    assert redact_url("redis://:pw@localhost:6379/0") == "redis://:***@localhost:6379/0"
    headers = {"Authorization": "Bearer x", "Accept": "application/json", "Cookie": "a=b"}
    assert redact_headers(headers) == {
        "Authorization": "***",
        "Accept": "application/json",
        "Cookie": "***",
    }


def test_filter_redacts_message_args_and_extras(stream: io.StringIO) -> None:
    log = logging.getLogger("quayside.secrets")
    log.info("upstream %s answered", "https://bot:Hunter22@upstream.example/v2/")
    log.info("request", extra={"headers": {"Authorization": "Basic Ym90Okh1bnRlcjIy"}})
    log.warning("got header Authorization: Bearer Zm9vYmFyYmF6 from client")
    text = stream.getvalue()
    for secret in ("Hunter22", "Ym90Okh1bnRlcjIy", "Zm9vYmFyYmF6"):
        assert secret not in text
    first, second, _ = lines(stream)
    assert first["msg"] == "upstream https://***@upstream.example/v2/ answered"
    assert second["headers"] == {"Authorization": "***"}


def test_filter_keeps_records_with_bad_format_strings() -> None:
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("many",), None)
    assert RedactingFilter().filter(rec) is True
    assert "many" in rec.getMessage()


async def test_access_logger_writes_json_without_query_secrets(
    stream: io.StringIO, aiohttp_server: Any, aiohttp_client: Any
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1000)

    app = web.Application()
    app.router.add_get("/v2/{name:.+}/blobs/{digest}", handler)
    server = await aiohttp_server(
        app,
        access_log_class=JSONAccessLogger,
        access_log=logging.getLogger("quayside.access"),
    )
    client = await aiohttp_client(server)
    resp = await client.get(
        "/v2/library/alpine/blobs/sha256:abc?token=T0psecret&n=2",
        headers={"User-Agent": "skopeo/1.0", "Authorization": "Bearer T0psecret"},
    )
    assert resp.status == 200
    assert len(await resp.read()) == 1000
    resp = await client.get("/nope")
    assert resp.status == 404
    access = [r for r in lines(stream) if r["logger"] == "quayside.access"]
    assert len(access) == 2
    ok, missing = access
    assert ok["method"] == "GET"
    assert ok["path"] == "/v2/library/alpine/blobs/sha256:abc?token=***&n=2"
    assert ok["status"] == 200
    assert ok["content_length"] == 1000
    assert isinstance(ok["bytes"], int) and ok["bytes"] >= 1000
    assert ok["remote"] == "127.0.0.1"
    assert ok["user_agent"] == "skopeo/1.0"
    assert isinstance(ok["duration_ms"], float) and ok["duration_ms"] >= 0
    assert missing["status"] == 404 and missing["path"] == "/nope"
    assert "T0psecret" not in stream.getvalue()


def _redact_every_pattern(text: str) -> str:
    """redact() without its fast path: every pattern applied."""
    import regcore.redaction as rl

    text = rl._URL_USERINFO.sub(lambda m: f"{m['scheme']}{rl.MASK}@", text)
    text = rl._AUTH_HEADER.sub(
        lambda m: f"{m['name']}{m['sep']}{m['scheme'] + ' ' if m['scheme'] else ''}{rl.MASK}",
        text,
    )
    text = rl._SCHEME_TOKEN.sub(lambda m: f"{m['scheme']} {rl.MASK}", text)
    return rl._PARAM.sub(lambda m: f"{m['name']}{m['sep']}{rl.MASK}", text)


def test_redact_fast_path_gives_the_same_answers_as_every_pattern() -> None:
    import random

    texts = [
        "GET /v2/library/alpine/manifests/latest 200",
        "GET /v2/library/alpine/manifests/sha256:" + "ab" * 32 + " 200",
        "GET /v2/design/app/manifests/sig=abcdef 404",
        "x PASSWORD=Hunter2 y",
        "API_KEY: abc",
        "apikey=abc",
        "Cookie: session=1",
        "X-Registry-Auth=eyJ4",
        "BASIC Zm9vYmFyYmF6",
        "x-amz-credential=AKIA/2024",
        "x-goog-credential:abc",
        "ftp://u:p@h/",
        "\u017fecret=hunter2",  # LATIN SMALL LETTER LONG S folds to "s" in the regexes
        "api_\u212aey=hunter2",  # KELVIN SIGN folds to "k"
        "wrk/4.1",
        "127.0.0.1",
        "",
    ]
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIKPST:=/ @._-\\t\u017f\u212a"
    words = ["token", "sig", "auth", "basic ", "bearer ", "://", "passwd", "key", "api_", "="]
    for _ in range(3000):
        parts = [rng.choice(alphabet) for _ in range(rng.randint(0, 12))]
        for _ in range(rng.randint(0, 3)):
            parts.insert(rng.randint(0, len(parts)), rng.choice(words))
        texts.append("".join(parts) + "".join(rng.choice("abc123") for _ in range(8)))
    for text in texts:
        assert redact(text) == _redact_every_pattern(text), text


def test_json_timestamps_match_datetime_rendering() -> None:
    import random

    from regcore.logging import JSONFormatter, _iso

    fmt = JSONFormatter()
    rng = random.Random(3)
    base = 1_763_798_400.0
    values = [base + rng.uniform(0, 5) for _ in range(2000)]
    values += [base + 0.9999996, base + 1.0004995, base + 2.9999999999, 0.0, base]
    for created in sorted(values) + values:  # in order (the cache) and jumping about
        rec = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        rec.created = created
        assert json.loads(fmt.format(rec))["ts"] == _iso(created)


async def test_access_log_is_one_record_per_request_with_every_field(
    stream: io.StringIO, aiohttp_server: Any, aiohttp_client: Any
) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    access_logger = logging.getLogger("quayside.access")
    access_logger.addHandler(keep)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"{}", content_type="application/json")

    try:
        app = web.Application()
        app.router.add_get("/v2/{name:.+}/manifests/{ref}", handler)
        server = await aiohttp_server(
            app, access_log_class=JSONAccessLogger, access_log=access_logger
        )
        client = await aiohttp_client(server)
        for path in (
            "/v2/team/app/manifests/latest",  # no query: nothing to redact
            "/v2/team/app/manifests/v1?ns=docker.io&password=pw1secret&X-Amz-Signature=s1g",
            "/v2/team/app/manifests/token=t0psecret",  # secret-looking path, no query
        ):
            resp = await client.get(path, headers={"User-Agent": "containerd/2.0"})
            assert resp.status == 200
            await resp.read()
    finally:
        access_logger.removeHandler(keep)
    text = stream.getvalue()
    for secret in ("pw1secret", "s1g", "t0psecret"):
        assert secret not in text
    access = [r for r in lines(stream) if r["logger"] == "quayside.access"]
    assert len(access) == 3 and len(records) == 3  # one record per request, seen by all
    plain, query, secret_path = access
    assert plain == {
        "ts": plain["ts"],
        "level": "info",
        "logger": "quayside.access",
        "msg": "GET /v2/team/app/manifests/latest 200",
        "method": "GET",
        "path": "/v2/team/app/manifests/latest",
        "status": 200,
        "bytes": plain["bytes"],
        "content_length": 2,
        "duration_ms": plain["duration_ms"],
        "remote": "127.0.0.1",
        "user_agent": "containerd/2.0",
    }
    assert isinstance(plain["bytes"], int) and plain["bytes"] > 2
    assert isinstance(plain["duration_ms"], float) and plain["duration_ms"] >= 0
    assert query["path"] == (
        "/v2/team/app/manifests/v1?ns=docker.io&password=***&X-Amz-Signature=***"
    )
    assert query["msg"] == f"GET {query['path']} 200"
    assert secret_path["path"] == "/v2/team/app/manifests/token=***"
    assert records[0].__dict__["path"] == "/v2/team/app/manifests/latest"  # extras as attributes
    assert records[1].getMessage() == query["msg"]


async def test_log_fields_and_reportcaller_on_every_line_access_lines_included(
    aiohttp_server: Any, aiohttp_client: Any
) -> None:
    """distribution's ``log.fields`` and ``log.reportcaller`` (regcore.configvalues)."""
    buf = io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    handler = setup_logging(
        "info", "json", stream=buf, fields={"service": "registry", "msg": "x"}, caller=True
    )
    try:
        logging.getLogger("quayside.test").info("hello", extra={"service": "mine"})

        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", ok)
        server = await aiohttp_server(
            app, access_log_class=JSONAccessLogger, access_log=logging.getLogger("quayside.access")
        )
        assert (await (await aiohttp_client(server)).get("/")).status == 200
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    hello, access = [r for r in lines(buf) if r["logger"] in ("quayside.test", "quayside.access")]
    assert hello["service"] == "mine"  # a record's own field wins
    assert hello["msg"] == "hello"  # reserved names are never replaced
    path, _, line = str(hello["file"]).rpartition(":")
    assert path.endswith("test_logging.py") and line.isdigit()
    assert hello["func"] == "test_log_fields_and_reportcaller_on_every_line_access_lines_included"
    assert access["service"] == "registry" and access["status"] == 200
    assert "file" not in access  # the access logger has no caller to report
