"""The edge's read-only status page at ``/ui/``: what the node's metrics say, for people.

Shown (all from the node's own metrics objects, :class:`edge.metrics.EdgeMetrics` and
:class:`edge.fill.EdgeFillMetrics`, and the cache's bound): the hit ratio of blobs and
manifests (hits / (hits + misses)), bytes served by source (cache, fill in progress,
pass-through), fills in progress and their totals (started, joined, from peers, failed), cache
use (bytes of the bound, entries, bytes reserved by running fills) and the eviction rate.

The eviction rate is per minute over the last :data:`WINDOW` seconds: :class:`EdgeStats`
samples the eviction counters every :data:`INTERVAL` seconds in a task started and stopped
with the application (``cleanup_ctx``) and once more when the page is drawn; before two samples
lie a second apart the page says "measuring".

Like ``/metrics``, the page shows aggregate figures only (no repository names, no client
addresses, no credentials) and is not behind authentication. ``GET /ui`` redirects to
``/ui/``; the page and its stylesheet (``/ui/edge.css``) carry a Content-Security-Policy that
allows no scripts, and ``Cache-Control: no-store``. The template is compiled on the first view
(:class:`PageTemplate`), so jinja2 is not loaded at start-up.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import Counter

from regcore.background import background

if TYPE_CHECKING:
    import jinja2

    from edge.node import EdgeNode

__all__ = ["CSS", "EdgeStats", "PageTemplate", "install"]

WINDOW = 300.0
INTERVAL = 10.0
_CSP = "default-src 'none'; style-src 'self'; form-action 'none'; frame-ancestors 'none'"

CSS = """body { margin: 0; font-family: system-ui, sans-serif; line-height: 1.5;
  color: #1b1f24; background-color: #ffffff; }
a { color: #0550ae; }
header { padding: 0.75em 1.5em; color: #ffffff; background-color: #0b3d5c; }
header p { margin: 0; font-weight: 700; font-size: 1.25rem; }
main { max-width: 60rem; margin: 0 auto; padding: 1em 1.5em 2em; }
h1 { font-size: 1.75rem; margin: 0.5em 0; }
h2 { font-size: 1.3rem; margin: 1.5em 0 0.5em; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; color: #57606a; padding: 0.25em 0; }
th, td { text-align: left; padding: 0.4em 0.6em; border-bottom: 1px solid #d0d7de; }
thead th { color: #1b1f24; background-color: #f6f8fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #57606a; }
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Edge status · Quayside</title>
<link rel="stylesheet" href="/ui/edge.css">
</head>
<body>
<header><p>Quayside edge</p></header>
<main>
<h1>Edge node status</h1>
<p class="muted">Since this node started {{ uptime }} ago. <a href="/ui/">Refresh</a></p>
<h2 id="hits">Cache hits</h2>
<table><caption>Requests answered from this node's cache</caption>
<thead><tr><th scope="col">Kind</th><th scope="col" class="num">Hits</th>
<th scope="col" class="num">Misses</th><th scope="col" class="num">Hit ratio</th></tr></thead><tbody>
{% for row in s.hits %}<tr><th scope="row">{{ row.kind }}</th><td class="num">{{ row.hits }}</td>
<td class="num">{{ row.misses }}</td><td class="num" id="hit-ratio-{{ row.key }}">{{ row.ratio }}</td></tr>
{% endfor %}</tbody></table>
<h2 id="served">Bytes served</h2>
<table><caption>Body bytes sent to clients, by where they came from</caption>
<thead><tr><th scope="col">Source</th><th scope="col" class="num">Bytes</th></tr></thead><tbody>
{% for name, n in s.served %}<tr><th scope="row">{{ name }}</th><td class="num">{{ n }}</td></tr>
{% endfor %}</tbody></table>
<h2 id="fills">Fills</h2>
<table><caption>Blob fills from upstreams and peers</caption><tbody>
{% for name, n in s.fills %}<tr><th scope="row">{{ name }}</th><td class="num">{{ n }}</td></tr>
{% endfor %}</tbody></table>
<h2 id="cache">Cache use</h2>
<table><caption>The blob cache and its bound</caption><tbody>
{% for name, n in s.cache %}<tr><th scope="row">{{ name }}</th><td class="num">{{ n }}</td></tr>
{% endfor %}</tbody></table>
<h2 id="evictions">Evictions</h2>
<table><caption>Blobs evicted to keep the cache within its bound</caption><tbody>
{% for name, n in s.evictions %}<tr><th scope="row">{{ name }}</th><td class="num">{{ n }}</td></tr>
{% endfor %}</tbody></table>
</main>
</body>
</html>
"""


def _bytes(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _ratio(hits: float, misses: float) -> str:
    total = hits + misses
    return "no requests yet" if total == 0 else f"{100.0 * hits / total:.1f}%"


def _sum(counter: Counter) -> float:
    """Every labelled child of ``counter`` added up (its ``_total`` samples)."""
    return sum(
        s.value for family in counter.collect() for s in family.samples if s.name.endswith("_total")
    )


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


class PageTemplate:
    """The page's jinja2 template (autoescaped, undefined names are errors), compiled on the
    first render: jinja2 is imported then, so a node whose page nobody opens never loads it."""

    def __init__(self, source: str = _PAGE) -> None:
        self.source = source
        self._template: jinja2.Template | None = None

    def render(self, **context: Any) -> str:
        if self._template is None:
            import jinja2

            env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
            self._template = env.from_string(self.source)
        return self._template.render(**context)


class EdgeStats:
    """The status page's figures for one node; see the module docstring. Use from one loop."""

    def __init__(
        self,
        node: EdgeNode,
        *,
        clock: Callable[[], float] = time.monotonic,
        window: float = WINDOW,
        interval: float = INTERVAL,
    ) -> None:
        self.node = node
        self._clock = clock
        self.window = window
        self.interval = interval
        self.started = clock()
        self._samples: collections.deque[tuple[float, float, float]] = collections.deque()

    def sample(self) -> tuple[float, float, float]:
        fm = self.node.fill_metrics
        now = self._clock()
        point = (now, fm.value("cache_evictions"), fm.value("cache_evicted_bytes"))
        self._samples.append(point)
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        return point

    def eviction_rate(self) -> tuple[float, float] | None:
        """(evictions, bytes) per minute over the window; None until two samples a second
        apart exist."""
        now, evictions, evicted = self.sample()
        first = self._samples[0]
        span = now - first[0]
        if span < 1.0:
            return None
        return (evictions - first[1]) * 60.0 / span, (evicted - first[2]) * 60.0 / span

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        self.started = self._clock()
        async with background(self.run(), name="edge-ui-sampler"):
            yield

    def figures(self) -> dict[str, Any]:
        m, fm, cache = self.node.metrics, self.node.fill_metrics, self.node.cache
        hits = []
        for key, kind in (("blob", "Blobs"), ("manifest", "Manifests")):
            h, miss = m.value("cache_hits", kind=key), m.value("cache_misses", kind=key)
            hits.append({"key": key, "kind": kind, "hits": int(h), "misses": int(miss)})
        all_h, all_m = sum(r["hits"] for r in hits), sum(r["misses"] for r in hits)
        hits.append({"key": "all", "kind": "All", "hits": all_h, "misses": all_m})
        for row in hits:
            row["ratio"] = _ratio(row["hits"], row["misses"])
        served = [
            (label, m.value("bytes_served", source=source))
            for source, label in (
                ("cache", "From the cache"),
                ("fill", "While filling"),
                ("passthrough", "Passed through uncached"),
            )
        ]
        served.append(("Total", sum(n for _, n in served)))
        used, bound = cache.bytes_used, cache.max_bytes
        rate = self.eviction_rate()
        return {
            "hits": hits,
            "served": [(name, _bytes(n)) for name, n in served],
            "fills": [
                ("In progress", int(fm.value("fills_active"))),
                ("Started", int(fm.value("fills_started"))),
                ("Joined a running fill", int(fm.value("fills_joined"))),
                ("Streamed from a peer", int(fm.value("fills_remote"))),
                ("Failed", int(_sum(fm.fills_failed))),
            ],
            "cache": [
                ("Used", f"{_bytes(used)} of {_bytes(bound)} ({100.0 * used / bound:.1f}%)"),
                ("Blobs", cache.entries),
                ("Reserved by running fills", _bytes(cache.bytes_reserved)),
            ],
            "evictions": [
                (
                    f"Rate (last {int(self.window // 60)} min)",
                    "measuring"
                    if rate is None
                    else f"{rate[0]:.1f} blobs/min, {_bytes(rate[1])}/min",
                ),
                ("Evicted since start", int(fm.value("cache_evictions"))),
                ("Bytes evicted since start", _bytes(fm.value("cache_evicted_bytes"))),
            ],
        }


def install(
    app: web.Application, node: EdgeNode, *, clock: Callable[[], float] = time.monotonic
) -> EdgeStats:
    """Add ``/ui``, ``/ui/`` and ``/ui/edge.css`` to ``app`` and the sampler to its
    lifecycle; returns the :class:`EdgeStats`."""
    stats = EdgeStats(node, clock=clock)
    template = PageTemplate()
    headers = {
        "Content-Security-Policy": _CSP,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }

    async def page(request: web.Request) -> web.Response:
        body = template.render(s=stats.figures(), uptime=_duration(clock() - stats.started))
        return web.Response(text=body, content_type="text/html", headers=headers)

    async def css(request: web.Request) -> web.Response:
        return web.Response(text=CSS, content_type="text/css", headers=headers)

    async def slash(request: web.Request) -> web.Response:
        return web.Response(status=303, headers={"Location": "/ui/", **headers})

    app.router.add_get("/ui", slash, name="ui_slash")
    app.router.add_get("/ui/", page, name="ui")
    app.router.add_get("/ui/edge.css", css, name="ui_css")
    app.cleanup_ctx.append(stats.lifespan)
    return stats
