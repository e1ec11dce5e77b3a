"""Warm manifest GETs by tag and by digest, driven by wrk with the clients' ``Accept`` header.

Before measuring, every node answers the manifest once (checked: 200 and the expected
``Docker-Content-Digest``), so the contender's cache is warm. Each repetition runs wrk for a
fixed duration (one wrk per node for multi-node contenders, connections split between them)
and reads the upstream's access log for the same window: upstream requests per client request
says how much of a warm manifest load still reaches the upstream (``direct`` is the upstream,
so 1.0 by construction).
"""

from __future__ import annotations

import urllib.error
import urllib.request

from bench import wrk
from bench.dataset import MANIFEST_ACCEPT, ImageRef
from bench.params import Params
from bench.results import HIGHER, LOWER, Metric, ScenarioRecord
from bench.scenarios.context import Budget, RunContext, Scenario
from bench.topologies import Contender

_METRICS = [
    Metric("rps", "requests/s", "req/s", HIGHER),
    Metric("p50_ms", "latency p50", "ms", LOWER),
    Metric("p99_ms", "latency p99", "ms", LOWER),
    Metric("upstream_per_request", "upstream requests per client request", "", LOWER),
]


def _reference(image: ImageRef, by: str) -> str:
    return image.tag if by == "tag" else image.digest


def _check(contender: Contender, image: ImageRef, reference: str, timeout: float) -> None:
    """GET the manifest through every node (twice); raise RuntimeError unless it is right."""
    for i in range(len(contender.nodes)):
        url = contender.manifest_url(image.repo, reference, i)
        for _ in range(2):
            req = urllib.request.Request(url, headers={"Accept": MANIFEST_ACCEPT})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    resp.read()
                    got = resp.headers.get("Docker-Content-Digest", "")
            except (urllib.error.URLError, OSError) as exc:
                raise RuntimeError(f"warm-up GET {url}: {exc}") from exc
            if got != image.digest:
                raise RuntimeError(f"warm-up GET {url}: digest {got!r}, expected {image.digest}")


def _make(by: str) -> Scenario:
    name = f"manifest_{by}"

    def steps(ctx: RunContext) -> int:
        return len(ctx.contenders_for(name)) * (ctx.params.manifest_repeats + 1)

    def run(ctx: RunContext, record: ScenarioRecord, budget: Budget) -> None:
        image = ctx.dataset.manifest
        assert image is not None
        reference = _reference(image, by)
        p = ctx.params
        ready: list[Contender] = []
        for contender in ctx.contenders_for(name):
            ctx.reporter.step(f"{name} · {contender.name} · warm-up")
            try:
                _check(contender, image, reference, budget.cap(10.0))
                ready.append(contender)
            except RuntimeError as exc:
                record.add_error(contender.name, str(exc))
            ctx.reporter.advance()
        for rep in range(p.manifest_repeats):
            for contender in ready:
                budget.check()
                budget.cap(p.manifest_duration + 5)
                ctx.reporter.step(f"{name} · {contender.name} · run {rep + 1}/{p.manifest_repeats}")
                log = ctx.upstream_log(contender)
                if log is not None:
                    log.settle(0.1, timeout=2.0)
                    log.mark()
                urls = [
                    contender.manifest_url(image.repo, reference, i)
                    for i in range(len(contender.nodes))
                ]
                try:
                    res = wrk.run_wrk_many(
                        urls,
                        {"Accept": MANIFEST_ACCEPT},
                        connections=p.manifest_connections,
                        duration=p.manifest_duration,
                    )
                except wrk.WrkError as exc:
                    record.add_error(contender.name, str(exc))
                    ctx.reporter.advance()
                    continue
                out: dict[str, object] = {
                    "rep": rep,
                    "requests": res.requests,
                    "duration_s": res.duration_s,
                    "errors": res.errors,
                    "p90_ms": res.p90_ms,
                    "p999_ms": res.p999_ms,
                    "mean_ms": res.mean_ms,
                    "max_ms": res.max_ms,
                }
                if res.error_count > res.requests // 100:
                    record.add_error(
                        contender.name, f"{res.error_count} errors in {res.requests} requests"
                    )
                else:
                    out.update(rps=res.rps, p50_ms=res.p50_ms, p99_ms=res.p99_ms)
                if log is not None:
                    log.settle(p.log_quiet, timeout=budget.cap(10.0))
                    served = log.served()
                    out["upstream_requests"] = served.requests
                    out["upstream_per_request"] = served.requests / max(1, res.requests)
                record.add_run(contender.name, out)
                ctx.reporter.advance()

    def params(p: Params) -> dict[str, object]:
        return {
            "reference": by,
            "duration_s": p.manifest_duration,
            "connections": p.manifest_connections,
            "wrk_threads_per_node": 1,
            "repeats": p.manifest_repeats,
            "accept": MANIFEST_ACCEPT,
        }

    return Scenario(
        name=name,
        title=f"Warm manifest by {by}",
        description=(
            f"wrk GETs of one manifest by {by} with the clients' Accept header, "
            "after one warm-up GET per node; upstream requests per client request from the "
            "upstream's access log over the same window."
        ),
        metrics=lambda p: list(_METRICS),
        steps=steps,
        run=run,
        params=params,
    )


MANIFEST_TAG = _make("tag")
MANIFEST_DIGEST = _make("digest")
