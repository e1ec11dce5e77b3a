"""Namespace quotas enforced while an upload's bytes arrive, against a real origin process.

The origin runs as ``python -m quayside origin serve`` (:class:`harness.servers.OriginProcess`)
with a quota on the ``team`` namespace. Each test is named after what a nearly full namespace
must not be able to do: store a large layer before being refused, get its announced oversize
body read at all, fit ten parallel uploads under a limit meant for four, leave a half-read
body on a keep-alive connection; and what it must still be able to do: re-push a layer it
holds, push with skopeo under the limit.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness import skopeo
from harness.images import MiB, make_image, make_layer
from harness.images import sha256_digest as sha256
from harness.servers import OriginProcess
from regcore.unreadbody import LINGER

pytestmark = pytest.mark.slow

LIMIT = 4 * MiB
CHUNK = 256 * 1024


def quota_origin(tmp: Path, limit: str = "4MiB") -> OriginProcess:
    config = {"quayside": {"quotas": {"namespaces": {"team": limit}}}}
    return OriginProcess(
        root=tmp / "root", workdir=tmp / "origin", config=config, log_level="info"
    ).start()


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[OriginProcess]:
    """An origin with a 4 MiB quota on ``team``; at teardown it answered no 5xx."""
    proc = quota_origin(tmp_path)
    try:
        yield proc
    finally:
        proc.close()
    assert proc.server_errors() == []


def uploads_root(origin: OriginProcess, repo: str) -> Path:
    return origin.root / "docker" / "registry" / "v2" / "repositories" / repo / "_uploads"


def upload_bytes(origin: OriginProcess) -> int:
    """Bytes held by every upload session on disk."""
    repos = origin.root / "docker" / "registry" / "v2" / "repositories"
    return sum(p.stat().st_size for p in repos.rglob("_uploads/*/data"))


def quota_denials(origin: OriginProcess) -> float:
    return origin.metric("quayside_origin_quota_denials")


async def start_session(http: aiohttp.ClientSession, origin: OriginProcess, repo: str) -> str:
    async with http.post(f"{origin.url}/v2/{repo}/blobs/uploads/") as r:
        assert r.status == 202, await r.text()
        return origin.url + r.headers["Location"]


def denied_entry(body: dict[str, Any]) -> dict[str, Any]:
    (err,) = body["errors"]
    assert err["code"] == "DENIED"
    assert "quota exceeded for namespace 'team'" in err["message"]
    return err


async def test_streamed_patch_over_quota_is_refused_before_its_body_is_stored(origin):
    """512 MiB streamed (chunked, no size announced) into a 4 MiB quota: refused once the
    session would pass 4 MiB, the session never holds more, its bytes are dropped and the
    client is not made to send the whole body."""
    seen = {"max_on_disk": 0, "sent": 0}
    async with aiohttp.ClientSession() as http:
        loc = await start_session(http, origin, "team/app")
        data_file = uploads_root(origin, "team/app") / loc.rsplit("/", 1)[1] / "data"
        block = b"\x5a" * CHUNK

        async def body() -> AsyncIterator[bytes]:
            while seen["sent"] < 512 * MiB:
                try:
                    size = data_file.stat().st_size
                except FileNotFoundError:
                    size = 0
                seen["max_on_disk"] = max(seen["max_on_disk"], size)
                seen["sent"] += len(block)
                yield block

        async with http.patch(loc, data=body()) as r:
            status, answer, connection = r.status, await r.json(), r.headers.get("Connection")
        assert status == 403, answer
        err = denied_entry(answer)
        assert err["detail"]["used"] == 0 and err["detail"]["limit"] == LIMIT
        assert LIMIT < err["detail"]["requested"] <= LIMIT + 4 * MiB
        assert "bytes dropped" in err["message"]
        assert connection == "close"
        async with http.get(loc) as r:
            assert r.status == 404  # the refused session is gone
    assert seen["max_on_disk"] <= LIMIT
    assert seen["sent"] < 256 * MiB  # the connection was closed, not drained to the end
    assert not data_file.parent.exists()
    assert quota_denials(origin) == 1


async def test_patch_announcing_a_size_over_quota_is_refused_before_the_body_is_read(origin):
    """Content-Length: 1 GiB and not one body byte sent: the 403 comes anyway, with
    ``Connection: close``; what the client writes afterwards is never taken for a request."""
    async with aiohttp.ClientSession() as http:
        loc = await start_session(http, origin, "team/app")
    path = loc[len(origin.url) :]
    reader, writer = await asyncio.open_connection("127.0.0.1", origin.port)
    try:
        writer.write(
            f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {1 << 30}\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 403"), head
        headers = head.decode().lower()
        assert "connection: close" in headers
        length = int(headers.split("content-length:")[1].split("\r\n")[0])
        err = denied_entry(json.loads(await reader.readexactly(length)))
        assert err["detail"]["requested"] == 1 << 30
        # a "next request" on the same connection would be body bytes to a keep-alive server
        writer.write(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), LINGER + 5)
        assert rest == b""  # closed, nothing answered
    finally:
        writer.close()
    assert not (uploads_root(origin, "team/app") / path.rsplit("/", 1)[1]).exists()


async def test_parallel_uploads_cannot_together_exceed_the_quota(origin):
    """Ten sessions stream 1 MiB each, interleaved, into a 4 MiB quota: those accepted hold at
    most 4 MiB together, the others are refused while streaming."""

    async def one(http: aiohttp.ClientSession, seed: int) -> tuple[int, str]:
        loc = await start_session(http, origin, f"team/r{seed}")
        piece = bytes([seed]) * (64 * 1024)

        async def body() -> AsyncIterator[bytes]:
            for _ in range(16):
                yield piece
                await asyncio.sleep(0.01)

        async with http.patch(loc, data=body()) as r:
            await r.read()
            return r.status, loc

    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(one(http, i) for i in range(10)))
        statuses = sorted(s for s, _ in results)
        accepted = [loc for s, loc in results if s == 202]
        assert statuses.count(403) >= 6 and set(statuses) <= {202, 403}, statuses
        assert upload_bytes(origin) == len(accepted) * MiB <= LIMIT
        for loc in accepted:  # and they commit: the early check was not too strict
            seed = int(loc.split("/team/r")[1].split("/")[0])
            digest = sha256(bytes([seed]) * MiB)
            async with http.put(loc, params={"digest": digest}) as r:
                assert r.status == 201, await r.text()
    assert quota_denials(origin) == statuses.count(403)


async def test_repush_of_a_held_layer_without_head_is_accepted_at_the_quota(origin):
    """A namespace holding a 3 MiB layer (near its 4 MiB limit) streams that same layer into a
    new session of another repository, with and without announcing its size: accepted, since
    the commit finds it free. A new, larger layer is refused while streaming."""
    held = make_layer(3 * MiB, seed=7)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{origin.url}/v2/team/app/blobs/uploads/",
            params={"digest": held.digest},
            data=io.BytesIO(held.data),
        ) as r:
            assert r.status == 201, await r.text()
        for announce in (False, True):
            loc = await start_session(http, origin, f"team/copy{int(announce)}")

            async def body(data: bytes = held.data) -> AsyncIterator[bytes]:
                for i in range(0, len(data), CHUNK):
                    yield data[i : i + CHUNK]

            kwargs: dict[str, Any] = {"data": io.BytesIO(held.data) if announce else body()}
            async with http.patch(loc, **kwargs) as r:
                assert r.status == 202, await r.text()
                loc = origin.url + r.headers["Location"]
            async with http.put(loc, params={"digest": held.digest}) as r:
                assert r.status == 201, await r.text()
        # a new layer larger than any held blob cannot be free: refused while streaming
        bigger = make_layer(3 * MiB + 512 * 1024, seed=8)
        loc = await start_session(http, origin, "team/app")
        async with http.patch(loc, data=io.BytesIO(bigger.data)) as r:
            assert r.status == 403
            denied_entry(await r.json())
        # the documented price: a new layer no larger than the largest held blob might be
        # that blob, so only its commit refuses it
        same_size = make_layer(3 * MiB, seed=9)
        loc = await start_session(http, origin, "team/app")
        async with http.patch(loc, data=io.BytesIO(same_size.data)) as r:
            assert r.status == 202
            loc = origin.url + r.headers["Location"]
        async with http.put(loc, params={"digest": same_size.digest}) as r:
            assert r.status == 403
            assert "bytes dropped" not in denied_entry(await r.json())["message"]


if shutil.which("skopeo") is not None:

    def test_skopeo_push_over_quota_fails_with_denied_and_stores_nothing(tmp_path: Path):
        proc = quota_origin(tmp_path, "1MiB")
        try:
            image = make_image(layer_sizes=(3 * MiB,), seed=11)
            with pytest.raises(skopeo.SkopeoError) as failed:
                skopeo.push(image, proc.host, "team/app", "v1", workdir=tmp_path)
            assert "denied" in failed.value.stderr
            assert "quota exceeded for namespace 'team'" in failed.value.stderr
            assert upload_bytes(proc) == 0  # the refused session's bytes were dropped
            assert proc.metric("quayside_origin_upload_bytes") < 2 * MiB
            assert proc.metric("quayside_origin_quota_denials") >= 1
            assert proc.server_errors() == []
        finally:
            proc.close()

    def test_skopeo_push_under_quota_still_works(tmp_path: Path):
        proc = quota_origin(tmp_path, "4MiB")
        try:
            image = make_image(layer_sizes=(1 * MiB, 1 * MiB), seed=12)
            skopeo.push(image, proc.host, "team/app", "v1", workdir=tmp_path)
            assert skopeo.inspect_raw(f"{proc.host}/team/app:v1") == image.manifest
            assert proc.metric("quayside_origin_quota_denials") == 0
            assert proc.server_errors() == []
        finally:
            proc.close()
