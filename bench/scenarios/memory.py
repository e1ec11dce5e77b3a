"""edge_rss: how much memory each contender's serving process needs for concurrent big downloads.

Runs first in the suite, so a fresh process's VmHWM (peak RSS over its lifetime, from /proc)
covers only this scenario. Two rounds of ``rss_clients`` concurrent downloads of one large blob:
the first cold (one fill, the others waiting on it), the second warm. A sampler thread also
reads VmRSS every 20 ms during the rounds. Multi-node contenders report the largest node (the
figure a node's memory limit must cover) and the sum. ``direct`` is the upstream, which already
received the dataset's uploads before this scenario, so its VmHWM includes them; nginx figures
are master + worker summed.
"""

from __future__ import annotations

import threading

from bench.params import Params
from bench.results import LOWER, NEUTRAL, Metric, ScenarioRecord
from bench.scenarios.blobs import _failures
from bench.scenarios.context import Budget, RunContext, Scenario
from bench.topologies import Contender

MB = 1e6
_SAMPLE_INTERVAL = 0.02

_METRICS = [
    Metric("peak_rss_mb", "peak RSS (VmHWM), largest node", "MB", LOWER),
    Metric("sampled_peak_mb", "peak sampled RSS during the rounds, largest node", "MB", LOWER),
    Metric("baseline_rss_mb", "RSS before the rounds, largest node", "MB", NEUTRAL),
    Metric("peak_rss_sum_mb", "peak RSS summed over nodes", "MB", NEUTRAL),
]


class _Sampler(threading.Thread):
    """Polls a contender's per-node RSS until stopped; keeps the per-node maximum."""

    def __init__(self, contender: Contender) -> None:
        super().__init__(daemon=True)
        self.contender = contender
        self.peaks = [0] * len(contender.processes())
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(_SAMPLE_INTERVAL):
            for i, (rss, _peak) in enumerate(self.contender.memory_per_node()[: len(self.peaks)]):
                self.peaks[i] = max(self.peaks[i], rss)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2.0)


def _steps(ctx: RunContext) -> int:
    return len(ctx.contenders_for("edge_rss"))


def _run(ctx: RunContext, record: ScenarioRecord, budget: Budget) -> None:
    blob = ctx.dataset.rss
    ctx.topology.add_static_blob(blob.digest)
    n = ctx.params.rss_clients
    for contender in ctx.contenders_for("edge_rss"):
        budget.check()
        ctx.reporter.step(f"edge_rss · {contender.name} · {n} clients, cold then warm")
        before = contender.memory_per_node()
        sampler = _Sampler(contender)
        sampler.start()
        run: dict[str, object] = {"clients": n}
        try:
            for phase in ("cold", "warm"):
                res = ctx.fetch(ctx.spread(contender, blob, n), budget)
                failures = _failures(res, blob)
                run[f"{phase}_wall_s"] = res.wall
                if failures:
                    record.add_error(
                        contender.name, f"{phase}: {len(failures)}/{n} failed: {failures[0]}"
                    )
        finally:
            sampler.stop()
        after = contender.memory_per_node()
        peaks = [peak for _rss, peak in after]
        run.update(
            peak_rss_mb=max(peaks, default=0) / MB,
            peak_rss_sum_mb=sum(peaks) / MB,
            sampled_peak_mb=max(sampler.peaks, default=0) / MB,
            baseline_rss_mb=max((rss for rss, _ in before), default=0) / MB,
            per_node_peak_mb=[p / MB for p in peaks],
        )
        record.add_run(contender.name, run)
        ctx.reporter.advance()


def _params(p: Params) -> dict[str, object]:
    return {"blob_size": p.rss_blob_size, "clients": p.rss_clients, "rounds": ["cold", "warm"]}


EDGE_RSS = Scenario(
    name="edge_rss",
    title="Memory while serving concurrent large downloads",
    description=__doc__.split("\n\n", 1)[1].replace("\n", " ").strip() if __doc__ else "",
    metrics=lambda p: list(_METRICS),
    steps=_steps,
    run=_run,
    params=_params,
)
