"""RegistryClient under injected upstream faults: in-test aiohttp servers that redirect across
hosts, cut streams, ignore Range, fail with 5xx/429, hang, or lie about digests."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from harness.ports import free_port
from harness.tokenserver import TokenServer
from regcore import errors
from regcore.auth.tokens import allows
from regcore.client import BlobStreamBroken, DigestMismatch, RegistryClient
from regcore.digest import Digest

REPO = "team/app"
DATA = os.urandom(1_000_000)
DIGEST = str(Digest.of(DATA))
BLOB_PATH = f"/v2/{REPO}/blobs/{DIGEST}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]


@dataclass
class Recorder:
    seen: list[Seen] = field(default_factory=list)

    def app(self, routes: dict[tuple[str, str], Handler]) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.seen.append(
                Seen(request.method, request.path, request.query_string, dict(request.headers))
            )
            return await handler(request)

        app = web.Application(middlewares=[record])
        for (method, path), fn in routes.items():
            app.router.add_route(method, path, fn)
        return app

    def count(self, method: str | None = None, path: str = "") -> int:
        return sum(
            1 for s in self.seen if (method is None or s.method == method) and path in s.path
        )


def _range_response(request: web.Request, data: bytes) -> web.Response:
    """A correct 206 for ``Range: bytes=a-[b]``."""
    spec = request.headers["Range"].removeprefix("bytes=")
    first, _, last = spec.partition("-")
    start, stop = int(first), (int(last) + 1 if last else len(data))
    return web.Response(
        status=206,
        body=data[start:stop],
        headers={"Content-Range": f"bytes {start}-{stop - 1}/{len(data)}"},
    )


async def _cut_after(request: web.Request, data: bytes, cut: int) -> web.StreamResponse:
    """Announce the whole body, send ``cut`` bytes, then close the connection."""
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = len(data)
    await resp.prepare(request)
    await resp.write(data[:cut])
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.close()
    return resp


# -- redirects --------------------------------------------------------------------------------


async def test_redirect_to_another_host_carries_no_credentials(
    aiohttp_server: AiohttpServer,
) -> None:
    """Upstream (127.0.0.1) wants a Bearer token from the token service and redirects blob GETs
    to a "CDN" on 127.0.0.2 with a signed URL: the CDN must see neither the token nor Basic."""
    cdn_rec, up_rec = Recorder(), Recorder()

    async def cdn_blob(request: web.Request) -> web.StreamResponse:
        if request.query.get("X-Amz-Signature") != "s3cr3t-signature":
            return web.Response(status=403)
        return web.Response(body=DATA)

    cdn = await aiohttp_server(cdn_rec.app({("GET", "/cdn/blob"): cdn_blob}), host="127.0.0.2")

    async with TokenServer(users={"alice": "pw"}, grants={"alice": {"team/*": ["pull"]}}) as tokens:

        async def blob(request: web.Request) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            claims = None
            if header.startswith("Bearer "):
                try:
                    claims = tokens.issuer.verify(header[7:])
                except errors.Unauthorized:
                    claims = None
            if claims is None or not allows(claims, "repository", REPO, "pull"):
                challenge = (
                    f'Bearer realm="{tokens.realm}",service="{tokens.issuer.service}",'
                    f'scope="repository:{REPO}:pull"'
                )
                return web.Response(status=401, headers={"WWW-Authenticate": challenge})
            location = (
                str(cdn.make_url("/cdn/blob"))
                + "?X-Amz-Signature=s3cr3t-signature&X-Amz-Expires=60"
            )
            return web.Response(status=307, headers={"Location": location})

        upstream = await aiohttp_server(up_rec.app({("GET", BLOB_PATH): blob}))
        hops: list[tuple[str, str, int]] = []
        async with RegistryClient(
            str(upstream.make_url("")),
            username="alice",
            password="pw",
            on_request=lambda *a: hops.append(a),
        ) as client:
            assert await client.get_blob(REPO, DIGEST) == DATA
            assert await client.get_blob(REPO, DIGEST) == DATA  # cached token, straight to the CDN

    assert [s.headers.get("Authorization", "").split(" ")[0] for s in up_rec.seen] == [
        "",
        "Bearer",
        "Bearer",
    ]
    assert cdn_rec.count("GET") == 2
    assert all("Authorization" not in s.headers for s in cdn_rec.seen)
    assert [r.authorization for r in tokens.requests] == [True]  # Basic only to the realm, once
    assert all("s3cr3t" not in url for _, url, _ in hops)  # metrics hook never sees signed queries


async def test_redirect_on_the_same_origin_keeps_credentials(aiohttp_server: AiohttpServer) -> None:
    rec = Recorder()

    async def first(request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": "/storage/blob"})

    async def storage(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer static":
            return web.Response(status=401)
        return web.Response(body=DATA)

    server = await aiohttp_server(
        rec.app({("GET", BLOB_PATH): first, ("GET", "/storage/blob"): storage})
    )
    async with RegistryClient(str(server.make_url("")), token="static") as client:
        assert await client.get_blob(REPO, DIGEST) == DATA
    assert [s.headers.get("Authorization") for s in rec.seen] == ["Bearer static", "Bearer static"]


async def test_redirect_loop_gives_up_after_five_hops(aiohttp_server: AiohttpServer) -> None:
    rec = Recorder()

    async def loop(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": BLOB_PATH})

    server = await aiohttp_server(rec.app({("GET", BLOB_PATH): loop}))
    async with RegistryClient(str(server.make_url("")), retries=0) as client:
        with pytest.raises(errors.UpstreamUnavailable, match="too many redirects"):
            await client.get_blob(REPO, DIGEST)
    assert rec.count("GET") == 6


async def test_signed_url_failure_message_leaks_no_secrets(aiohttp_server: AiohttpServer) -> None:
    async def expired(request: web.Request) -> web.StreamResponse:
        return web.Response(status=403, text="Request has expired")

    cdn = await aiohttp_server(Recorder().app({("GET", "/cdn/blob"): expired}), host="127.0.0.2")

    async def blob(request: web.Request) -> web.StreamResponse:
        location = str(cdn.make_url("/cdn/blob")) + "?X-Amz-Signature=s3cr3t-signature"
        return web.Response(status=307, headers={"Location": location})

    upstream = await aiohttp_server(Recorder().app({("GET", BLOB_PATH): blob}))
    async with RegistryClient(str(upstream.make_url("")), token="t0ps3cret") as client:
        with pytest.raises(errors.Denied) as info:
            await client.get_blob(REPO, DIGEST)
    text = str(info.value) + repr(info.value.detail)
    assert "s3cr3t" not in text and "t0ps3cret" not in text
    assert "127.0.0.2" in text


# -- broken streams ---------------------------------------------------------------------------


async def test_connection_cut_mid_blob_is_resumed_with_range(aiohttp_server: AiohttpServer) -> None:
    rec = Recorder()
    cut = 300_000

    async def blob(request: web.Request) -> web.StreamResponse:
        if "Range" in request.headers:
            return _range_response(request, DATA)
        return await _cut_after(request, DATA, cut)

    server = await aiohttp_server(rec.app({("GET", BLOB_PATH): blob}))
    resumed: list[tuple[str, int]] = []
    async with RegistryClient(
        str(server.make_url("")), on_resume=lambda d, o: resumed.append((d, o))
    ) as client:
        async with client.blob_stream(REPO, DIGEST, verify=True) as stream:
            assert stream.total_size == len(DATA)
            received = await stream.read_all()
        assert received == DATA
        assert stream.resumes == 1 and client.resumes == 1
    assert resumed == [(DIGEST, cut)]
    assert [s.headers.get("Range") for s in rec.seen] == [None, f"bytes={cut}-"]


async def test_resume_of_a_byte_range_keeps_the_range_end(aiohttp_server: AiohttpServer) -> None:
    rec = Recorder()

    async def blob(request: web.Request) -> web.StreamResponse:
        if rec.count("GET") == 1:  # first request: serve part of the range, then cut
            resp = _range_response(request, DATA)
            stream = web.StreamResponse(
                status=206, headers={"Content-Range": resp.headers["Content-Range"]}
            )
            stream.content_length = resp.content_length
            await stream.prepare(request)
            assert isinstance(resp.body, bytes)
            await stream.write(resp.body[:1000])
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.close()
            return stream
        return _range_response(request, DATA)

    server = await aiohttp_server(rec.app({("GET", BLOB_PATH): blob}))
    async with RegistryClient(str(server.make_url(""))) as client:
        async with client.blob_stream(REPO, DIGEST, offset=5000, end=9000) as stream:
            assert await stream.read_all() == DATA[5000:9000]
    assert [s.headers.get("Range") for s in rec.seen] == ["bytes=5000-8999", "bytes=6000-8999"]


async def test_upstream_ignoring_range_on_resume_is_skipped_to_the_right_offset(
    aiohttp_server: AiohttpServer,
) -> None:
    rec = Recorder()

    async def blob(request: web.Request) -> web.StreamResponse:
        if rec.count("GET") == 1:
            return await _cut_after(request, DATA, 123_457)
        return web.Response(body=DATA)  # 200: Range ignored

    server = await aiohttp_server(rec.app({("GET", BLOB_PATH): blob}))
    async with RegistryClient(str(server.make_url(""))) as client:
        async with client.blob_stream(REPO, DIGEST, verify=True) as stream:
            assert await stream.read_all() == DATA
            assert stream.range_ignored == 1 and stream.resumes == 1


async def test_stream_that_keeps_breaking_fails_after_max_resumes(
    aiohttp_server: AiohttpServer,
) -> None:
    rec = Recorder()

    async def blob(request: web.Request) -> web.StreamResponse:
        return await _cut_after(request, DATA, 10_000)  # ignores Range and always cuts

    server = await aiohttp_server(rec.app({("GET", BLOB_PATH): blob}))
    async with RegistryClient(str(server.make_url("")), max_resumes=2) as client:
        with pytest.raises(BlobStreamBroken, match="after 2 resumes"):
            await client.get_blob(REPO, DIGEST)
        assert client.resumes == 2
    assert rec.count("GET") == 3


async def test_resume_answered_with_another_range_fails(aiohttp_server: AiohttpServer) -> None:
    rec = Recorder()

    async def blob(request: web.Request) -> web.StreamResponse:
        if rec.count("GET") == 1:
            return await _cut_after(request, DATA, 50_000)
        return web.Response(
            status=206, body=DATA[:10], headers={"Content-Range": f"bytes 0-9/{len(DATA)}"}
        )

    server = await aiohttp_server(rec.app({("GET", BLOB_PATH): blob}))
    async with RegistryClient(str(server.make_url(""))) as client:
        with pytest.raises(BlobStreamBroken, match="different range"):
            await client.get_blob(REPO, DIGEST)


async def test_corrupt_blob_bytes_fail_verification(aiohttp_server: AiohttpServer) -> None:
    async def blob(request: web.Request) -> web.StreamResponse:
        return web.Response(body=DATA[:-1] + bytes([DATA[-1] ^ 0xFF]))

    server = await aiohttp_server(Recorder().app({("GET", BLOB_PATH): blob}))
    async with RegistryClient(str(server.make_url(""))) as client:
        with pytest.raises(DigestMismatch):
            await client.get_blob(REPO, DIGEST)


async def test_manifest_whose_bytes_do_not_match_its_digest_is_rejected(
    aiohttp_server: AiohttpServer,
) -> None:
    body = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
    other = str(Digest.of(body + b" "))

    async def manifest(request: web.Request) -> web.StreamResponse:
        headers = {
            "Docker-Content-Digest": other,
            "Content-Type": "application/vnd.oci.image.manifest.v1+json",
        }
        return web.Response(body=body, headers=headers)

    server = await aiohttp_server(
        Recorder().app({("GET", f"/v2/{REPO}/manifests/{{ref}}"): manifest})
    )
    async with RegistryClient(str(server.make_url(""))) as client:
        with pytest.raises(DigestMismatch):
            await client.get_manifest(REPO, "latest")  # header digest disagrees with the body
        with pytest.raises(DigestMismatch):
            await client.get_manifest(REPO, other)  # asked by digest, got other bytes


# -- retries, rate limits, outages ------------------------------------------------------------


async def test_503_twice_then_200_is_retried(aiohttp_server: AiohttpServer) -> None:
    rec = Recorder()

    async def blob(request: web.Request) -> web.StreamResponse:
        if rec.count("HEAD") <= 2:
            return web.Response(status=503)
        return web.Response(body=DATA)

    server = await aiohttp_server(rec.app({("HEAD", BLOB_PATH): blob}))
    async with RegistryClient(str(server.make_url("")), backoff=0.01) as client:
        assert await client.head_blob(REPO, DIGEST) == len(DATA)
    assert rec.count("HEAD") == 3


async def test_writes_are_never_retried(aiohttp_server: AiohttpServer) -> None:
    rec = Recorder()

    async def unavailable(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503)

    server = await aiohttp_server(rec.app({("POST", f"/v2/{REPO}/blobs/uploads/"): unavailable}))
    async with RegistryClient(str(server.make_url("")), backoff=0.01) as client:
        with pytest.raises(errors.UpstreamUnavailable):
            await client.push_blob(REPO, b"data")
    assert rec.count("POST") == 1


async def test_429_becomes_too_many_requests_after_retries(aiohttp_server: AiohttpServer) -> None:
    rec = Recorder()

    async def limited(request: web.Request) -> web.StreamResponse:
        wait = "3600" if "long" in request.path else "0"
        return web.Response(status=429, headers={"Retry-After": wait})

    routes = {("HEAD", f"/v2/{REPO}/manifests/{{ref}}"): limited}
    server = await aiohttp_server(rec.app(routes))
    async with RegistryClient(str(server.make_url("")), backoff=0.01, retries=2) as client:
        with pytest.raises(errors.TooManyRequests) as info:
            await client.head_manifest(REPO, "short")
        assert info.value.headers == {"Retry-After": "0"}
        assert rec.count("HEAD", "short") == 3

        started = time.monotonic()
        with pytest.raises(errors.TooManyRequests) as info:
            await client.head_manifest(REPO, "long")  # Retry-After beyond the cap: no waiting
        assert time.monotonic() - started < 1.0
        assert info.value.headers == {"Retry-After": "3600"}
        assert rec.count("HEAD", "long") == 1


async def test_hung_upstream_times_out_within_the_read_timeout() -> None:
    """The server accepts connections and never answers (like a SIGSTOPped registry)."""
    accepted: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with RegistryClient(
            f"http://127.0.0.1:{port}", read_timeout=0.5, retries=3
        ) as client:
            started = time.monotonic()
            with pytest.raises(errors.UpstreamTimeout):
                await client.head_manifest(REPO, "latest")
            assert time.monotonic() - started < 2.0  # timeouts are not retried
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_upstream_hanging_mid_blob_fails_bounded(aiohttp_server: AiohttpServer) -> None:
    release = asyncio.Event()

    async def blob(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = len(DATA)
        await resp.prepare(request)
        await resp.write(DATA[:1000])
        await release.wait()
        return resp

    server = await aiohttp_server(Recorder().app({("GET", BLOB_PATH): blob}))
    try:
        async with RegistryClient(
            str(server.make_url("")), read_timeout=0.3, max_resumes=1
        ) as client:
            started = time.monotonic()
            with pytest.raises(BlobStreamBroken):
                await client.get_blob(REPO, DIGEST)
            assert time.monotonic() - started < 3.0
    finally:
        release.set()


async def test_connection_refused_is_upstream_unavailable_after_retries() -> None:
    port = free_port()
    statuses: list[int] = []
    async with RegistryClient(
        f"http://127.0.0.1:{port}",
        backoff=0.01,
        retries=2,
        on_request=lambda m, u, s: statuses.append(s),
    ) as client:
        with pytest.raises(errors.UpstreamUnavailable):
            await client.head_blob(REPO, DIGEST)
    assert statuses == [0, 0, 0]


async def test_head_blob_falls_back_to_a_one_byte_get_when_storage_refuses_head(
    aiohttp_server: AiohttpServer,
) -> None:
    rec = Recorder()

    async def signed(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(status=403)  # signature was made for GET
        return _range_response(request, DATA)

    cdn = await aiohttp_server(
        rec.app({("GET", "/cdn/blob"): signed, ("HEAD", "/cdn/blob"): signed}), host="127.0.0.2"
    )

    async def blob(request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": str(cdn.make_url("/cdn/blob"))})

    upstream = await aiohttp_server(
        Recorder().app({("GET", BLOB_PATH): blob, ("HEAD", BLOB_PATH): blob})
    )
    async with RegistryClient(str(upstream.make_url(""))) as client:
        assert await client.head_blob(REPO, DIGEST) == len(DATA)
    assert [(s.method, s.headers.get("Range")) for s in rec.seen] == [
        ("HEAD", None),
        ("GET", "bytes=0-0"),
    ]
