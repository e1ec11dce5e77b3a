"""One benchmark run: start the topology, seed the upstreams, run the scenarios, write results.

Three phases, each with its own processes, stopped before the next begins: the loopback
scenarios (one topology on 127.0.0.1), the WAN scenarios (:mod:`bench.wan`: namespaces, link,
relay; skipped with the reason when namespaces cannot be made) and the origin push.

Guarantees:
- every process the run starts (upstreams, contenders, load-generator workers) is stopped in a
  ``finally``, also on Ctrl-C, SIGTERM or SIGHUP (:mod:`bench.stopping`, installed by the CLI)
  or an unexpected error, and the run's temp dir is removed; the WAN phase also removes its
  namespaces; a termination signal that arrives during a teardown waits until it is done;
- every scenario records how busy the machine was with other work meanwhile
  (:class:`bench.machine.CpuMeter`: load averages and the CPU share of foreign processes);
- each scenario is bounded by ``Params.scenario_timeout``; a scenario that times out or fails
  is recorded with its error and the run goes on with the next one;
- ``results.json``, ``results.md`` and the plots are written even for an interrupted run
  (``"complete": false``, ``"interrupted": true``; ``"terminated": "SIGTERM"`` or ``"SIGHUP"``
  when a signal ended it), so partial figures are never lost.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from bench import machine, plots, report, stopping, targets, wan
from bench.dataset import Dataset, seed
from bench.loadgen import LoadGenerator
from bench.params import LOOPBACK_SCENARIOS, WAN_SCENARIOS, Params
from bench.results import ScenarioRecord
from bench.scenarios import ALL, Budget, RunContext, ScenarioTimeout, push
from bench.topologies import Topology, scenarios_of

RESULTS_DIR = Path(__file__).resolve().parent / "results"


class _ProgressReporter:
    """Adapts a rich progress task to :class:`bench.scenarios.context.Reporter`."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self.progress = progress
        self.task = task

    def step(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def advance(self, steps: int = 1) -> None:
        self.progress.advance(self.task, steps)


def _utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def default_out_dir() -> Path:
    return RESULTS_DIR / _utc_stamp()


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


class _Runner:
    """Runs scenarios one by one into ``results["scenarios"]`` with one progress bar."""

    def __init__(self, params: Params, progress: Progress, results: dict[str, Any]) -> None:
        self.params = params
        self.progress = progress
        self.results = results
        self.overall = progress.add_task("scenarios", total=0)
        self.reporter = _ProgressReporter(progress, self.overall)
        self.done = 0

    def _add_total(self, steps: int) -> None:
        total = self.progress.tasks[self.overall].total or 0
        self.progress.update(self.overall, total=total + steps)

    def skip(self, names: Sequence[str], reason: str) -> None:
        """Record ``names`` as skipped (no figures) with ``reason``."""
        for name in names:
            scenario = ALL[name]
            record = ScenarioRecord(
                name=name,
                title=scenario.title,
                description=scenario.description,
                metrics=scenario.metrics(self.params),
                params=scenario.params(self.params),
                skipped=reason,
            )
            self.results["scenarios"][name] = record.to_dict()

    def run(self, ctx: RunContext, names: Sequence[str]) -> None:
        """Run ``names`` in ``ctx``; each bounded by ``scenario_timeout``, failures recorded."""
        steps = {name: ALL[name].steps(ctx) for name in names}
        self._add_total(sum(steps.values()))
        for name in names:
            scenario = ALL[name]
            record = ScenarioRecord(
                name=name,
                title=scenario.title,
                description=scenario.description,
                metrics=scenario.metrics(self.params),
                params=scenario.params(self.params),
            )
            started = time.monotonic()
            meter = machine.CpuMeter().start()
            try:
                scenario.run(ctx, record, Budget.of(self.params.scenario_timeout))
            except ScenarioTimeout as exc:
                record.error = f"timed out after {self.params.scenario_timeout:.0f}s: {exc}"
            except Exception as exc:  # one broken scenario must not lose the others' figures
                record.error = f"{type(exc).__name__}: {exc}"
            finally:
                record.conditions = meter.stop()
                record.duration_s = time.monotonic() - started
                self.results["scenarios"][name] = record.to_dict()
            self.done += steps[name]
            self.progress.update(self.overall, completed=self.done)  # failed: skip its steps


def run(params: Params, out_dir: Path, *, console: Console) -> dict[str, Any]:
    """Run the suite described by ``params``; write results under ``out_dir``; return them."""
    started = time.monotonic()
    selected = [s for s in ALL if s in params.scenarios]
    results: dict[str, Any] = {
        "schema": 2,
        "mode": params.mode,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "complete": False,
        "params": params.to_dict(),
        "machine": machine.info(),
        "contenders": {},
        "contender_failures": {},
        "scenarios": {},
        "targets": [],
    }
    meter = machine.CpuMeter().start()
    workdir = Path(tempfile.mkdtemp(prefix="qs-bench-"))
    try:
        with _progress(console) as progress:
            runner = _Runner(params, progress, results)
            loopback = [s for s in selected if s in LOOPBACK_SCENARIOS]
            if loopback:
                _loopback_phase(params, loopback, workdir / "loopback", progress, runner)
            wan_names = [s for s in selected if s in WAN_SCENARIOS]
            if wan_names:
                wan.run_phase(
                    params, wan_names, workdir / "wan", runner.reporter, results,
                    runner.run, runner.skip,
                )  # fmt: skip
            if "origin_push" in selected:
                for name, desc in push.CONTENDERS.items():
                    results["contenders"].setdefault(name, desc)
                ctx = RunContext(
                    params, Topology(workdir / "push"), Dataset(), LoadGenerator(), workdir,
                    runner.reporter,
                )  # fmt: skip
                runner.run(ctx, ["origin_push"])
            progress.update(runner.overall, description="done")
        results["complete"] = True
    except KeyboardInterrupt:  # Ctrl-C, and SIGTERM/SIGHUP (stopping.Terminated) alike
        results["interrupted"] = True
        raise
    finally:
        with stopping.teardown():  # a signal now waits until the results are written
            shutil.rmtree(workdir, ignore_errors=True)
            results["duration_s"] = round(time.monotonic() - started, 1)
            results["machine"]["load_average_end"] = machine.load_average()
            results["conditions"] = meter.stop()
            signalled = stopping.received()
            if signalled is not None:
                results["terminated"] = signalled
            write(results, out_dir)
    return results


def _loopback_phase(
    params: Params, names: list[str], workdir: Path, progress: Progress, runner: _Runner
) -> None:
    """The loopback scenarios: one topology on 127.0.0.1, stopped before the next phase."""
    wanted = frozenset(names)
    contenders = [c for c in params.contenders if scenarios_of(c) & wanted]
    workdir.mkdir(parents=True)
    topology = Topology(workdir, edge_cache_size=params.edge_cache_size)
    loadgen = LoadGenerator(processes=1)
    results = runner.results
    try:
        setup = progress.add_task("starting upstreams", total=3)
        needs_origin = any(n in ("origin", "quayside-1-origin") for n in contenders)
        topology.start_upstreams(with_origin=needs_origin)
        progress.update(setup, advance=1, description="seeding upstreams")
        assert topology.registry is not None
        origin_url = topology.origin.url if topology.origin is not None else None
        dataset = seed(topology.registry.url, params, wanted, origin_url)
        results["dataset"] = dataset.to_dict()
        progress.update(setup, advance=1, description="starting contenders")
        topology.start_contenders(contenders)
        loadgen.start()
        results["contenders"].update({n: c.describe() for n, c in topology.contenders.items()})
        results["contender_failures"].update(topology.failures)
        progress.update(setup, advance=1, description="topology ready")
        ctx = RunContext(params, topology, dataset, loadgen, workdir, runner.reporter)
        runner.run(ctx, names)
    finally:
        with stopping.teardown():
            loadgen.close()
            topology.close()


def write(results: dict[str, Any], out_dir: Path) -> None:
    """Targets, plots, ``results.json`` and ``results.md`` into ``out_dir`` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results["targets"] = targets.evaluate(
        results["scenarios"], herd_clients=results["params"].get("herd_clients")
    )
    try:
        results["plots"] = plots.render_all(results, out_dir)
    except Exception as exc:  # a plotting problem must not lose the figures
        results["plots"] = {}
        results["plot_error"] = f"{type(exc).__name__}: {exc}"
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / "results.md").write_text(report.render(results))


def publish_latest(out_dir: Path, results: dict[str, Any]) -> Path:
    """Copy a run to ``bench/results/latest.md`` + ``bench/results/latest/`` (JSON and PNGs)."""
    latest_dir = RESULTS_DIR / "latest"
    shutil.rmtree(latest_dir, ignore_errors=True)
    latest_dir.mkdir(parents=True)
    shutil.copy2(out_dir / "results.json", latest_dir / "results.json")
    for png in out_dir.glob("*.png"):
        shutil.copy2(png, latest_dir / png.name)
    md = RESULTS_DIR / "latest.md"
    md.write_text(report.render(results, image_prefix="latest/"))
    return md
