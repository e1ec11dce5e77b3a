"""What every scenario gets: the running topology, the dataset, the load generator, a budget.

:class:`Budget` bounds a scenario in wall-clock time: every load job, wrk run and skopeo call
asks :meth:`Budget.cap` for its own timeout, which is never more than what is left, and
:meth:`Budget.check` raises :class:`ScenarioTimeout` between steps once the time is up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.dataset import BlobRef, Dataset, WanDataset
from bench.loadgen import LoadGenerator
from bench.loadjob import FetchJob, JobResult
from bench.machine import wait_quiet
from bench.params import Params
from bench.results import Metric, ScenarioRecord
from bench.topologies import Contender, Topology
from bench.upstreamlog import UpstreamLog
from harness.registry import DockerRegistry
from harness.wanlink import LinkCounters, WanLink, WanRelay


class ScenarioTimeout(TimeoutError):
    """The scenario's overall time budget ran out."""


@dataclass
class Budget:
    """A deadline on ``time.monotonic()``."""

    deadline: float

    @classmethod
    def of(cls, seconds: float) -> Budget:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self) -> None:
        """Raises :class:`ScenarioTimeout` when the budget is spent."""
        if self.remaining() <= 0:
            raise ScenarioTimeout("scenario time budget exhausted")

    def cap(self, seconds: float) -> float:
        """``min(seconds, remaining)``; raises :class:`ScenarioTimeout` when nothing is left."""
        left = self.remaining()
        if left <= 0.5:
            raise ScenarioTimeout("scenario time budget exhausted")
        return min(seconds, left)


class Reporter(Protocol):
    """Progress display: what is running now, and one step done."""

    def step(self, text: str) -> None: ...

    def advance(self, steps: int = 1) -> None: ...


@dataclass
class RunContext:
    params: Params
    topology: Topology
    dataset: Dataset
    loadgen: LoadGenerator
    workdir: Path
    reporter: Reporter

    def contenders_for(self, scenario: str) -> list[Contender]:
        running = self.topology.contenders
        return [
            running[name]
            for name in self.params.contenders
            if name in running and scenario in running[name].scenarios
        ]

    def upstream_log(self, contender: Contender) -> UpstreamLog | None:
        """A cursor on the log of what ``contender`` asked its upstream (``None``: unknown)."""
        if contender.upstream_log is None:
            return None
        return UpstreamLog(
            contender.upstream_log,
            agent=contender.upstream_agent,
            exclude_agent=contender.upstream_agent_exclude,
        )

    def mark_upstreams(self, contenders: list[Contender]) -> dict[str, UpstreamLog]:
        """Cursors at the current end of every contender's upstream log (scenario start)."""
        logs = {}
        for contender in contenders:
            log = self.upstream_log(contender)
            if log is not None:
                log.mark()
                logs[contender.name] = log
        return logs

    def settle_upstreams(self, logs: dict[str, UpstreamLog], budget: Budget) -> None:
        """Let late upstream fetches land in the logs: a fixed pause, then each log quiet."""
        time.sleep(min(1.0, max(0.0, budget.remaining() - 1)))
        for log in logs.values():
            log.settle(self.params.log_quiet, timeout=max(0.1, min(10.0, budget.remaining())))

    def quiesce(self, budget: Budget) -> dict[str, object]:
        """Before a timed step: wait (within the budget, at most 15 s) until every server
        this run started is idle (:func:`bench.machine.wait_quiet`); what the run records
        about it: ``settle_s`` and ``settled``."""
        waited, quiet = wait_quiet(timeout=max(0.0, min(15.0, budget.remaining() - 1)))
        return {"settle_s": round(waited, 3), "settled": quiet}

    def fetch(
        self,
        urls: list[str],
        budget: Budget,
        *,
        cap: float = 300.0,
        verify: str | None = None,
    ) -> JobResult:
        """One round of concurrent GETs (one per URL) in the load-generator process."""
        job = FetchJob(urls=tuple(urls), timeout=budget.cap(cap), verify_digest=verify)
        return self.loadgen.run(job)

    def spread(self, contender: Contender, blob: BlobRef, clients: int) -> list[str]:
        """``clients`` URLs for ``blob``, round-robin over the contender's nodes."""
        return [contender.blob_url(blob.repo, blob.digest, i) for i in range(clients)]


@dataclass(frozen=True)
class Scenario:
    """A named measurement: ``steps`` for the progress bar, ``run`` fills the record."""

    name: str
    title: str
    description: str
    metrics: Callable[[Params], list[Metric]]
    steps: Callable[[RunContext], int]
    run: Callable[[RunContext, ScenarioRecord, Budget], None]
    params: Callable[[Params], dict[str, object]]


@dataclass
class WanContext(RunContext):
    """A run context across the emulated WAN (built by :mod:`bench.wan`): the calling thread
    is inside the region namespace; the upstream registry and the relay are in the upstream
    namespace, behind ``link``."""

    link: WanLink
    relays: dict[str, WanRelay]  # the WAN's delay, per contender (and "probe")
    fast_relay: WanRelay  # the same relay without delay, on the upstream's loopback
    upstream: DockerRegistry
    wan: WanDataset

    def counters(self, name: str, budget: Budget, timeout: float = 20.0) -> LinkCounters:
        """Once the link is quiet (:meth:`settle_link`): what crossed it downstream so far
        for contender ``name`` (from its relay's port; ``"probe"`` for the probes)."""
        self.settle_link(budget, timeout=timeout)
        return self.link.counters(name)

    def settle_link(
        self, budget: Budget, quiet: float = 0.3, timeout: float = 20.0
    ) -> LinkCounters:
        """Wait until the link carried less than 64 KiB for ``quiet`` s (late transfers of the
        previous step done), at most ``timeout`` s; return the counters then."""
        deadline = time.monotonic() + min(timeout, max(0.5, budget.remaining() - 1))
        last = self.link.counters()
        since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.link.counters()
            moved = (now.rx_bytes - last.rx_bytes) + (now.tx_bytes - last.tx_bytes)
            if moved >= 64 * 1024:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return now
        return self.link.counters()
