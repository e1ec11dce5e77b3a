"""Uploads against the origin running as a real process: crashes, restarts, memory.

The server is started exactly as an operator would (``python -m quayside origin serve
--listen 127.0.0.1:0 --root DIR``, or ``python -m origin``) by
:class:`harness.servers.OriginProcess`, which finds it through the JSON ``listening`` line it
prints.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.images import MiB
from harness.images import sha256_digest as sha256
from harness.servers import OriginProcess

pytestmark = pytest.mark.slow

NAME = "team/app"


@pytest.fixture
def origin_proc(tmp_path: Path) -> Iterator[Callable[..., Awaitable[OriginProcess]]]:
    """``await origin_proc(root=None, **OriginProcess kwargs)``: a started origin (default root
    ``tmp_path/root``, log level warning), started in a worker thread so the loop stays free;
    every one is closed at teardown."""
    started: list[OriginProcess] = []

    async def start(root: Path | None = None, **kw: Any) -> OriginProcess:
        kw.setdefault("log_level", "warning")
        p = OriginProcess(
            root=root or tmp_path / "root", workdir=tmp_path, name=f"origin{len(started)}", **kw
        )
        started.append(p)
        await asyncio.to_thread(p.start)
        return p

    yield start
    for p in started:
        p.close()


def big(data: bytes) -> io.BytesIO:
    """aiohttp warns when a body over 1 MiB is given as bytes."""
    return io.BytesIO(data)


def blob_files(root: Path) -> list[Path]:
    return sorted((root / "docker" / "registry" / "v2" / "blobs").rglob("data"))


def upload_dirs(root: Path) -> list[Path]:
    return sorted(
        p for p in (root / "docker" / "registry" / "v2" / "repositories").rglob("_uploads/*")
    )


async def _start(http: aiohttp.ClientSession, base: str) -> str:
    async with http.post(f"{base}/v2/{NAME}/blobs/uploads/") as r:
        assert r.status == 202
        return base + r.headers["Location"]


async def _offset(http: aiohttp.ClientSession, loc: str) -> int:
    async with http.get(loc) as r:
        assert r.status == 204, await r.text()
        end = int(r.headers["Range"].split("-")[1])
        return 0 if end == 0 else end + 1  # only valid for uploads that are not 1 byte long


async def test_upload_resumes_after_origin_is_killed_between_chunks(origin_proc, tmp_path):
    root = tmp_path / "root"
    data = os.urandom(3 * MiB + 123)
    half = len(data) // 2
    first = await origin_proc(root)
    async with aiohttp.ClientSession() as http:
        loc = await _start(http, first.url)
        doomed = await _start(http, first.url)
        async with http.patch(
            loc, data=big(data[:half]), headers={"Content-Range": f"0-{half - 1}"}
        ) as r:
            assert r.status == 202
        async with http.patch(doomed, data=b"x" * 1000) as r:
            assert r.status == 202
        first.kill()  # SIGKILL: no shutdown code runs

        second = await origin_proc(root, main_module="origin")  # python -m origin works too
        loc = second.url + loc.removeprefix(first.url)
        doomed = second.url + doomed.removeprefix(first.url)
        assert await _offset(http, loc) == half
        blob_url = f"{second.url}/v2/{NAME}/blobs/{sha256(data)}"
        async with http.get(blob_url) as r:
            assert r.status == 404  # nothing half-written is served
        async with http.patch(
            loc, data=big(data[half:]), headers={"Content-Range": f"{half}-{len(data) - 1}"}
        ) as r:
            assert r.status == 202
        async with http.put(loc, params={"digest": sha256(data)}) as r:
            assert r.status == 201, await r.text()
        async with http.get(blob_url) as r:
            assert r.status == 200 and await r.read() == data
        # The other session is cancelled after the restart: nothing of it remains.
        async with http.delete(doomed) as r:
            assert r.status == 204
    assert upload_dirs(root) == []
    assert [p.read_bytes() for p in blob_files(root)] == [data]


async def test_upload_resumes_after_origin_is_killed_mid_chunk(origin_proc, tmp_path):
    root = tmp_path / "root"
    data = os.urandom(6 * MiB)
    first = await origin_proc(root)
    stalled = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for off in range(0, 4 * MiB, 256 * 1024):
            yield data[off : off + 256 * 1024]
        stalled.set()
        await asyncio.sleep(60)  # the server dies before this chunk ends

    async with aiohttp.ClientSession() as http:
        loc = await _start(http, first.url)
        patch = asyncio.create_task(http.patch(loc, data=body()))
        await asyncio.wait_for(stalled.wait(), 10)
        await asyncio.sleep(0.3)
        first.kill()
        with pytest.raises(aiohttp.ClientError):
            resp = await asyncio.wait_for(patch, 10)
            resp.release()

        second = await origin_proc(root)
        loc = second.url + loc.removeprefix(first.url)
        offset = await _offset(http, loc)
        assert 0 <= offset <= 4 * MiB
        async with http.patch(
            loc, data=big(data[offset:]), headers={"Content-Range": f"{offset}-{len(data) - 1}"}
        ) as r:
            assert r.status == 202
        async with http.put(loc, params={"digest": sha256(data)}) as r:
            assert r.status == 201, await r.text()
        async with http.get(f"{second.url}/v2/{NAME}/blobs/{sha256(data)}") as r:
            assert await r.read() == data


async def test_64_mib_patch_keeps_server_memory_flat(origin_proc, tmp_path):
    origin = await origin_proc()
    chunk = os.urandom(MiB)
    total = 64
    h = hashlib.sha256()
    for _ in range(total):
        h.update(chunk)
    digest = "sha256:" + h.hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total):
            yield chunk

    async with aiohttp.ClientSession() as http:
        # Warm up: one small upload so threads, buffers and imports are in place.
        warm = await _start(http, origin.url)
        async with http.patch(warm, data=big(os.urandom(2 * MiB))) as r:
            assert r.status == 202
        async with http.delete(warm) as r:
            assert r.status == 204
        before = origin.peak_rss_bytes()
        loc = await _start(http, origin.url)
        async with http.patch(loc, data=body()) as r:
            assert r.status == 202
            assert r.headers["Range"] == f"0-{total * MiB - 1}"
        async with http.put(loc, params={"digest": digest}) as r:
            assert r.status == 201
        grown = origin.peak_rss_bytes() - before
    assert grown < 32 * MiB, f"peak RSS grew by {grown / MiB:.1f} MiB"
    [blob] = blob_files(tmp_path / "root")
    assert blob.stat().st_size == total * MiB


async def test_sigterm_stops_the_origin_cleanly(origin_proc):
    origin = await origin_proc()
    async with aiohttp.ClientSession() as http, http.get(origin.url + "/v2/") as r:
        assert r.status == 200
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert origin.stop() == 0


async def test_bad_config_exits_2_naming_the_key(tmp_path):
    cfg = tmp_path / "config.yml"
    cfg.write_text("version: 0.1\nstorage:\n  filesystem:\n    rootdir: /tmp/nope\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quayside",
        "origin",
        "serve",
        "--config",
        str(cfg),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"rootdir" in err


async def test_serves_tls_when_a_certificate_is_configured(origin_proc, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = await asyncio.to_thread(
        subprocess.run,
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    cfg = tmp_path / "config.yml"
    cfg.write_text(f"version: 0.1\nhttp:\n  tls:\n    certificate: {cert}\n    key: {key}\n")
    origin = await origin_proc(config=cfg)
    assert origin.url.startswith("https://127.0.0.1:")
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    async with aiohttp.ClientSession() as http:
        async with http.get(origin.url + "/v2/", ssl=ctx) as r:
            assert r.status == 200 and await r.json() == {}
        dg = sha256(b"over tls")
        async with http.post(
            f"{origin.url}/v2/{NAME}/blobs/uploads/",
            params={"digest": dg},
            data=b"over tls",
            ssl=ctx,
        ) as r:
            assert r.status == 201
        async with http.get(f"{origin.url}/v2/{NAME}/blobs/{dg}", ssl=ctx) as r:
            assert await r.read() == b"over tls"
