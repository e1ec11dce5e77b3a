"""The edge's status page against a real edge in front of a real docker-registry."""

from __future__ import annotations

import re

from edge.ui import EdgeStats
from harness.fixtures import ImageFactory
from harness.images import KiB
from harness.registry import DockerRegistry
from tests.edge.conftest import MakeEdge, push
from tests.ui.a11y import css_pair_problems, page_problems


def cell(body: str, label: str) -> str:
    match = re.search(rf'<th scope="row">{re.escape(label)}</th><td class="num">([^<]*)</td>', body)
    assert match, label
    return match.group(1)


async def test_status_page_shows_hit_ratio_bytes_served_fills_and_cache_use(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    img = image_factory.image(layer_sizes=(200 * KiB,))
    await push(docker_registry.url, "team/app", "v1", img)
    e = await make_edge({"local": docker_registry.url})
    resp = await e.client.get("/ui/")
    body = await resp.text()
    assert resp.status == 200
    assert re.search(r'id="hit-ratio-blob">no requests yet<', body)
    layer = img.layers[0]
    for _ in range(2):  # a miss (fill), then a hit
        resp = await e.client.get(f"/v2/team/app/blobs/{layer.digest}")
        assert await resp.read() == layer.data
    resp = await e.client.get("/ui/")
    body = await resp.text()
    assert re.search(r'id="hit-ratio-blob">50\.0%<', body)
    assert re.search(r'id="hit-ratio-all">50\.0%<', body)
    size = f"{layer.size / 1024:.1f} KiB"
    assert cell(body, "From the cache") == size and cell(body, "While filling") == size
    assert cell(body, "Started") == "1" and cell(body, "In progress") == "0"
    assert cell(body, "Blobs") == "1"
    assert cell(body, "Used").startswith(f"{size} of ")
    assert cell(body, "Evicted since start") == "0"
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert resp.headers["Cache-Control"] == "no-store"
    assert "<script" not in body and docker_registry.url.split("://")[1] not in body
    assert page_problems(body) == []
    resp = await e.client.get("/ui/edge.css")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/css")
    assert css_pair_problems(await resp.text()) == []
    resp = await e.client.get("/ui", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/"


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


async def test_eviction_rate_is_evictions_per_minute_over_the_window(
    docker_registry: DockerRegistry, image_factory: ImageFactory, make_edge: MakeEdge
) -> None:
    images = [image_factory.image(layer_sizes=(256 * KiB,)) for _ in range(6)]
    for n, img in enumerate(images):
        await push(docker_registry.url, "team/app", f"v{n}", img)
    e = await make_edge({"local": docker_registry.url}, cache_size=1024 * KiB)
    clock = Clock()
    stats = EdgeStats(e.edge, clock=clock, window=300.0)
    assert stats.eviction_rate() is None  # one sample: measuring
    for img in images:
        resp = await e.client.get(f"/v2/team/app/blobs/{img.layers[0].digest}")
        assert resp.status == 200
        await resp.read()
    evicted = e.metric("cache_evictions")
    evicted_bytes = e.metric("cache_evicted_bytes")
    assert evicted >= 2
    clock.now += 120.0  # two minutes later
    rate = stats.eviction_rate()
    assert rate == (evicted / 2, evicted_bytes / 2)
    clock.now += 400.0  # beyond the window: the old samples drop out, nothing new happened
    stats.sample()
    clock.now += 60.0
    assert stats.eviction_rate() == (0.0, 0.0)
    resp = await e.client.get("/ui/")
    body = await resp.text()
    assert cell(body, "Evicted since start") == str(int(evicted))
