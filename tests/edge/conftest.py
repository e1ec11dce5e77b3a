"""Edge test fixtures: the real ``create_app`` on an aiohttp test server, docker-registry as
upstream, images pushed with raw OCI HTTP (fast, and every upstream request is accounted for).

``make_edge(**kw)`` -> :class:`RunningEdge`; keywords: ``upstreams`` (name -> URL or a mapping
for the config), ``tag_ttl``, ``revalidate_timeout``, ``read_timeout``, ``connect_timeout``,
``cache_size``, ``default`` (default upstream name), ``upstream_configs`` (ready
UpstreamConfig objects, e.g. private ones).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from edge.app import EDGE_NODE, create_app
from edge.config import EdgeConfig, load_edge_config
from edge.node import EdgeNode
from edge.upstreamconfig import UpstreamConfig
from harness import oci_http
from harness.images import Image, ImageIndex

OCI_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


class FakeClock:
    """A monotonic clock tests move by hand (tag TTLs)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RunningEdge:
    client: TestClient
    config: EdgeConfig
    registry: CollectorRegistry
    clock: FakeClock

    @property
    def edge(self) -> EdgeNode:
        return self.client.server.app[EDGE_NODE]

    def metric(self, name: str, **labels: str) -> float:
        """A counter's value (name without ``quayside_edge_`` and ``_total``)."""
        for suffix in ("_total", ""):
            v = self.registry.get_sample_value(f"quayside_edge_{name}{suffix}", labels)
            if v is not None:
                return v
        return 0.0


MakeEdge = Callable[..., Awaitable[RunningEdge]]


@pytest.fixture
def make_edge(aiohttp_client: Any, tmp_path: Path) -> MakeEdge:
    counter = iter(range(1000))

    async def make(
        upstreams: Mapping[str, str] | None = None,
        *,
        upstream_configs: tuple[UpstreamConfig, ...] = (),
        tag_ttl: float = 60.0,
        revalidate_timeout: float = 1.0,
        connect_timeout: float = 1.0,
        read_timeout: float = 2.0,
        cache_size: int = 256 * 1024 * 1024,
        default: str | None = None,
        redis_url: str | None = None,
    ) -> RunningEdge:
        entries: list[Any] = [
            {
                "name": name,
                "url": url,
                "timeouts": {"connect": connect_timeout, "read": read_timeout},
                "retries": 1,
            }
            for name, url in (upstreams or {}).items()
        ]
        overrides: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "cache": {"dir": str(tmp_path / f"edge-cache-{next(counter)}"), "size": cache_size},
            "tags": {"ttl": tag_ttl, "revalidate_timeout": revalidate_timeout},
            "upstreams": [*entries, *upstream_configs],
        }
        if default is not None:
            overrides["default_upstream"] = default
        if redis_url is not None:  # region members need an advertised URL (unused here)
            overrides["redis"] = {"url": redis_url}
            overrides["advertise"] = "http://127.0.0.1:9"
        config = load_edge_config(None, {}, overrides)
        clock = FakeClock()
        registry = CollectorRegistry()
        app = create_app(config, clock=clock, registry=registry)
        client = await aiohttp_client(app)
        return RunningEdge(client=client, config=config, registry=registry, clock=clock)

    return make


async def push(base_url: str, repo: str, tag: str, item: Image | ImageIndex) -> str:
    """Push an image/index to a plain registry with raw OCI HTTP; returns the manifest digest."""
    async with aiohttp.ClientSession() as session:
        return await oci_http.push_image(session, base_url, repo, tag, item)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def forward(request: aiohttp.web.Request, upstream_url: str) -> aiohttp.web.Response:
    """Relay ``request`` to ``upstream_url`` as it came (no redirect followed) and its answer
    back: the pass-through half of the small fault-injecting fronts these tests put before a
    real registry."""
    headers = {
        k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
    }
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.request(
            request.method, upstream_url + request.path_qs, headers=headers, allow_redirects=False
        ) as up:
            body = await up.read()
            out = {
                k: v
                for k, v in up.headers.items()
                if k.lower() not in ("transfer-encoding", "content-length", "connection")
            }
            if request.method == "HEAD":
                out["Content-Length"] = up.headers.get("Content-Length", "0")
                return aiohttp.web.Response(status=up.status, headers=out)
            return aiohttp.web.Response(status=up.status, body=body, headers=out)


class RateLimiter:
    """A real HTTP front for an upstream that answers 429 TOOMANYREQUESTS (``Retry-After:
    60``, beyond the client's retry budget) while :attr:`limited` is set, and forwards every
    request to the upstream otherwise. Docker Hub's pull limit, reproducible."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.limited = False
        self.refused = 0

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        if self.limited:
            self.refused += 1
            body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"pull limit reached"}]}'
            return aiohttp.web.Response(
                status=429,
                body=body,
                content_type="application/json",
                headers={"Retry-After": "60"},
            )
        return await forward(request, self.upstream_url)


@pytest.fixture
def rate_limiter(aiohttp_server: Any) -> Callable[[str], Awaitable[tuple[str, RateLimiter]]]:
    async def start(upstream_url: str) -> tuple[str, RateLimiter]:
        limiter = RateLimiter(upstream_url)
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", limiter.handle)
        server = await aiohttp_server(app)
        return f"http://127.0.0.1:{server.port}", limiter

    return start


def span_bytes(fill: Any, fd: int, offset: int, count: int) -> bytes:
    """The bytes of one span from ``fill.spans()``, taken where ``fill.locate`` says they
    are (live in memory, or in the span's file), as every real consumer must."""
    out = bytearray()
    stop = offset + count
    while offset < stop:
        view, file_stop = fill.locate(offset, stop)
        if view is not None:
            out += view
            offset += len(view)
        else:
            out += os.pread(fd, file_stop - offset, offset)
            offset = file_stop
    return bytes(out)
