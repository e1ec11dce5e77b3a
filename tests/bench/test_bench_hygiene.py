"""Bench hygiene: what a result says about itself (commit, machine load, skipped scenarios).

No benchmark runs here: the report is rendered from small hand-made result dicts, and the
busy-machine meter is checked against processes whose CPU use is known.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import machine, report
from bench.results import LOWER, Metric, ScenarioRecord

_BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _results(**extra: Any) -> dict[str, Any]:
    record = ScenarioRecord(
        name="wan_pull",
        title="Image pull across the WAN (skopeo)",
        description="d",
        metrics=[Metric("cold_s", "cold pull", "s", LOWER)],
        skipped="not root: network namespaces need CAP_SYS_ADMIN",
    )
    base: dict[str, Any] = {
        "mode": "quick",
        "started_at": "2026-01-01T00:00:00+00:00",
        "duration_s": 1.0,
        "machine": {
            "cpu_count": 2,
            "cpu_model": "cpu",
            "memory_gib": 1,
            "kernel": "k",
            "python": "3.11",
            "tools": {},
            "git_commit": "abc1234",
            "git": {
                "commit": "abc1234" + "0" * 33,
                "short": "abc1234",
                "date": "2026-01-01T00:00:00+00:00",
                "changed_files": ["bench/report.py"],
            },
            "load_average_start": [0.1, 0.1, 0.1],
            "load_average_end": [0.2, 0.1, 0.1],
        },
        "conditions": {
            "load_before": [0.1],
            "load_after": [0.2],
            "foreign_cpu_share": 0.5,
            "busy": True,
        },
        "contenders": {},
        "scenarios": {"wan_pull": record.to_dict()},
        "targets": [],
        "wan": {"skipped": "not root: network namespaces need CAP_SYS_ADMIN"},
    }
    base.update(extra)
    return base


def test_report_names_its_commit_and_uncommitted_changes_and_cites_only_shipped_files() -> None:
    text = report.render(_results())
    assert "commit abc1234 (2026-01-01T00:00:00+00:00)" in text
    assert "uncommitted changes to bench/report.py" in text
    repo = Path(__file__).resolve().parents[2]
    for cited in ("CLIENTS.md", "ARCHITECTURE.md"):
        if cited in text:
            assert (repo / cited).exists(), f"the report cites {cited}, which does not ship"
    assert "bench/README.md" in text and (repo / "bench" / "README.md").exists()


def test_report_marks_a_busy_run_and_shows_skipped_scenarios_with_the_reason() -> None:
    text = report.render(_results())
    assert "other processes used 50% of the CPUs" in text and "busy machine" in text
    section = text.split("(`wan_pull`)", 1)[1]
    assert "**Skipped** (nothing measured): not root" in section
    assert "| contender" not in section.split("##", 1)[0]  # no figures table for it
    quiet = _results(conditions={"load_before": [0.1], "load_after": [0.1],
                                 "foreign_cpu_share": 0.01, "busy": False})  # fmt: skip
    assert "busy machine" not in report.render(quiet)


def test_git_state_is_the_checkout_this_code_runs_from() -> None:
    repo = Path(__file__).resolve().parents[2]
    state = machine.git_state(repo)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    assert state["commit"] == head
    assert isinstance(state["changed_files"], list)


def test_cpu_meter_counts_this_runs_children_as_its_own_and_others_as_foreign() -> None:
    tick = os.sysconf("SC_CLK_TCK")
    own0 = machine._tree_jiffies(os.getpid())
    subprocess.run([sys.executable, "-c", _BURN.format(s=0.5)], check=True, timeout=60)
    own = (machine._tree_jiffies(os.getpid()) - own0) / tick
    assert own >= 0.4, f"a reaped child's 0.5 s of CPU counted as {own:.2f} s"
    # a process that is not ours (re-parented to init by a double fork) is foreign
    own0 = machine._tree_jiffies(os.getpid())
    busy0, _total0 = machine._cpu_jiffies()
    subprocess.run(
        [sys.executable, "-c",
         "import os, subprocess, sys\n"
         f"subprocess.Popen([sys.executable, '-c', {_BURN.format(s=0.5)!r}], "
         "start_new_session=True)\n"],
        check=True, timeout=60,
    )  # fmt: skip
    time.sleep(1.5)
    own = (machine._tree_jiffies(os.getpid()) - own0) / tick
    busy = (machine._cpu_jiffies()[0] - busy0) / tick
    assert own < 0.3, f"an orphan's CPU counted as ours ({own:.2f} s)"
    assert busy >= 0.4  # the machine did see it
    meter = machine.CpuMeter().start()
    conditions = meter.stop()
    assert set(conditions) == {"load_before", "load_after", "foreign_cpu_share", "busy"}
    assert 0.0 <= float(conditions["foreign_cpu_share"]) <= 1.0


def test_wait_quiet_waits_for_a_busy_server_this_run_started_and_no_longer() -> None:
    """A child still burning CPU (the reference proxy fetching its second copy after its
    client was served) keeps the next timed step waiting until it is done."""
    burner = subprocess.Popen([sys.executable, "-c", _BURN.format(s=1.5)])
    try:
        time.sleep(0.3)  # it is importing and burning now
        waited, quiet = machine.wait_quiet(timeout=20)
        assert burner.poll() is not None, "wait_quiet returned while the child still burned"
        assert quiet and waited >= 0.5
    finally:
        burner.kill()
        burner.wait()
    waited, quiet = machine.wait_quiet(timeout=20)  # nothing of ours runs now
    assert quiet and waited < 2
    sleeper = subprocess.Popen([sys.executable, "-c", _BURN.format(s=30)])
    try:  # a child that never settles: the wait is bounded and says so
        time.sleep(0.3)
        waited, quiet = machine.wait_quiet(timeout=1.0)
        assert not quiet and 1.0 <= waited < 3
    finally:
        sleeper.kill()
        sleeper.wait()


def test_each_repetition_starts_one_contender_further_along() -> None:
    from bench.scenarios.blobs import rotated

    names = ["direct", "reference-proxy", "quayside-1"]
    orders = [rotated(names, rep) for rep in range(4)]  # type: ignore[arg-type]
    assert orders[0] == names and orders[3] == names
    assert orders[1] == ["reference-proxy", "quayside-1", "direct"]
    # over a full turn each contender runs first once (right after a scenario's set-up)
    assert sorted(o[0] for o in orders[:3]) == sorted(names)
    assert rotated([], 2) == []


def test_committed_results_ship_every_plot_they_show() -> None:
    """bench/results/latest.md's images are files of the repository (the WAN and push plots
    were once left out by .gitignore, so a clone showed broken images)."""
    results = Path(__file__).resolve().parents[2] / "bench" / "results"
    text = (results / "latest.md").read_text()
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert shown, "latest.md shows no plot"
    tracked = set(
        subprocess.run(
            ["git", "ls-files", "bench/results"],
            cwd=results.parents[1],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    )
    missing = [p for p in shown if f"bench/results/{p}" not in tracked]
    assert not missing, f"latest.md shows plots the repository does not have: {missing}"
