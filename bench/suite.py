"""One benchmark run: start the topology, seed the upstreams, run the scenarios, write results.

Guarantees:
- every process the run starts (upstreams, contenders, load-generator workers) is stopped in a
  ``finally``, also on Ctrl-C or an unexpected error, and the run's temp dir is removed;
- each scenario is bounded by ``Params.scenario_timeout``; a scenario that times out or fails
  is recorded with its error and the run goes on with the next one;
- ``results.json``, ``results.md`` and the plots are written even for an interrupted run
  (``"complete": false``), so partial figures are never lost.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import time
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

from bench import machine, plots, report, targets
from bench.dataset import Dataset, seed
from bench.loadgen import LoadGenerator
from bench.params import Params
from bench.results import ScenarioRecord
from bench.scenarios import ALL, Budget, RunContext, ScenarioTimeout
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


def run(params: Params, out_dir: Path, *, console: Console) -> dict[str, Any]:
    """Run the suite described by ``params``; write results under ``out_dir``; return them."""
    started = time.monotonic()
    selected = [s for s in ALL if s in params.scenarios]
    wanted = frozenset(selected)
    names = [c for c in params.contenders if scenarios_of(c) & wanted]
    results: dict[str, Any] = {
        "schema": 1,
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
    workdir = Path(tempfile.mkdtemp(prefix="qs-bench-"))
    topology = Topology(workdir, edge_cache_size=params.edge_cache_size)
    loadgen = LoadGenerator(processes=1)
    try:
        with _progress(console) as progress:
            setup = progress.add_task("starting upstreams", total=3)
            needs_origin = any(n in ("origin", "quayside-1-origin") for n in names)
            topology.start_upstreams(with_origin=needs_origin)
            progress.update(setup, advance=1, description="seeding upstreams")
            assert topology.registry is not None
            origin_url = topology.origin.url if topology.origin is not None else None
            dataset = seed(topology.registry.url, params, wanted, origin_url)
            results["dataset"] = dataset.to_dict()
            progress.update(setup, advance=1, description="starting contenders")
            topology.start_contenders(names)
            loadgen.start()
            results["contenders"] = {n: c.describe() for n, c in topology.contenders.items()}
            results["contender_failures"] = dict(topology.failures)
            progress.update(setup, advance=1, description="topology ready")
            _run_scenarios(params, selected, topology, dataset, loadgen, workdir, progress, results)
        results["complete"] = True
    except KeyboardInterrupt:
        results["interrupted"] = True
        raise
    finally:
        loadgen.close()
        topology.close()
        shutil.rmtree(workdir, ignore_errors=True)
        results["duration_s"] = round(time.monotonic() - started, 1)
        results["machine"]["load_average_end"] = machine.load_average()
        write(results, out_dir)
    return results


def _run_scenarios(
    params: Params,
    selected: list[str],
    topology: Topology,
    dataset: Dataset,
    loadgen: LoadGenerator,
    workdir: Path,
    progress: Progress,
    results: dict[str, Any],
) -> None:
    overall = progress.add_task("scenarios", total=None)
    ctx = RunContext(
        params, topology, dataset, loadgen, workdir, _ProgressReporter(progress, overall)
    )
    steps = {name: ALL[name].steps(ctx) for name in selected}
    progress.update(overall, total=sum(steps.values()))
    done = 0
    for name in selected:
        scenario = ALL[name]
        record = ScenarioRecord(
            name=name,
            title=scenario.title,
            description=scenario.description,
            metrics=scenario.metrics(params),
            params=scenario.params(params),
        )
        started = time.monotonic()
        try:
            scenario.run(ctx, record, Budget.of(params.scenario_timeout))
        except ScenarioTimeout as exc:
            record.error = f"timed out after {params.scenario_timeout:.0f}s: {exc}"
        except Exception as exc:  # one broken scenario must not lose the others' figures
            record.error = f"{type(exc).__name__}: {exc}"
        record.duration_s = time.monotonic() - started
        results["scenarios"][name] = record.to_dict()
        done += steps[name]
        progress.update(overall, completed=done)  # a failed scenario skips its remaining steps
    progress.update(overall, description="done")


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
