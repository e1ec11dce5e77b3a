"""``quayside bench --quick`` runs end to end and writes complete results (no timing asserts).

The suite starts its own processes on free loopback ports and its own temp dirs, so this test
can run beside any other test (``pytest -n``); it asserts no timing: every scenario is in
``results.json`` with a number for every contender that ran it; each target's figure is the one
recomputed from the scenarios' numbers and its verdict is that figure compared with its
threshold as the report states it (``results.md`` shows the same figure and verdict); the herd
targets (one upstream GET, not a timing) pass; at least one PNG was written.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

_TOOLS = ("docker-registry", "redis-server", "nginx", "wrk", "skopeo")
_SCENARIOS = {
    "edge_rss",
    "cold_blob",
    "herd",
    "warm_blob",
    "manifest_tag",
    "manifest_digest",
    "image_pull",
}


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda v, t: v >= t,
    "<=": lambda v, t: v <= t,
}


def _median(scenarios: dict[str, Any], scenario: str, contender: str, key: str) -> float:
    return float(scenarios[scenario]["contenders"][contender]["summary"][key]["median"])


def _worst(scenarios: dict[str, Any], scenario: str, contender: str, key: str) -> float:
    return max(float(r[key]) for r in scenarios[scenario]["contenders"][contender]["runs"])


def _measured(scenarios: dict[str, Any], key: str) -> float:
    """A target's figure recomputed from the scenarios' own numbers in results.json."""
    m = functools.partial(_median, scenarios)
    if key.startswith("warm_blob_c"):
        col = "mb_s_c" + key.removeprefix("warm_blob_c")
        return m("warm_blob", "quayside-1", col) / m("warm_blob", "nginx-static", col)
    if key == "cold_blob_total":
        return m("cold_blob", "quayside-1", "total_s") / m("cold_blob", "direct", "total_s")
    if key == "manifest_tag_rps":
        return m("manifest_tag", "quayside-1", "rps") / m("manifest_tag", "reference-proxy", "rps")
    if key.startswith("herd_amplification_"):
        return _worst(scenarios, "herd", key.removeprefix("herd_amplification_"), "amplification")
    if key == "edge_peak_rss":
        return _worst(scenarios, "edge_rss", "quayside-1", "peak_rss_mb")
    raise AssertionError(f"unknown target {key}: add how it is measured")


def test_quick_bench_writes_every_scenario_for_every_contender(tmp_path: Path) -> None:
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (make sysdeps)")
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "regcore.cli", "bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert (out / "results.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_complete_results(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _assert_complete_results(out: Path) -> None:
    """What a quick run must have written to ``out`` (see the module docstring)."""
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True
    assert results["mode"] == "quick"
    assert results["machine"]["cpu_count"] >= 1
    assert set(results["machine"]["tools"]) >= set(_TOOLS)
    assert not results["contender_failures"], results["contender_failures"]
    assert set(results["scenarios"]) == _SCENARIOS

    for name, scenario in results["scenarios"].items():
        assert scenario["error"] is None, f"{name}: {scenario['error']}"
        assert scenario["contenders"], f"{name}: no contender ran"
        ranked = [m["key"] for m in scenario["metrics"] if m["better"] != "none"]
        for contender, entry in scenario["contenders"].items():
            if contender.startswith("quayside"):  # peers may stumble; ours must not
                assert not entry["errors"], f"{name}/{contender}: {entry['errors']}"
            assert entry["runs"], f"{name}/{contender}: no runs"
            for key in ranked:
                median = entry["summary"][key]["median"]
                assert isinstance(median, (int, float)), f"{name}/{contender}/{key}: {median}"
    # the herd spread really shared one fill for Quayside, and the reference proxy did not
    herd = results["scenarios"]["herd"]["contenders"]
    assert herd["quayside-3"]["summary"]["upstream_gets"]["max"] == 1
    assert herd["reference-proxy"]["summary"]["upstream_gets"]["median"] > 1

    targets = {t["key"]: t for t in results["targets"]}
    assert {
        "warm_blob_c1",
        "warm_blob_c16",
        "cold_blob_total",
        "manifest_tag_rps",
        "edge_peak_rss",
        "herd_amplification_quayside-3",
    } <= set(targets)
    scenarios = results["scenarios"]
    for key, target in targets.items():
        value, threshold, op = target["value"], target["threshold"], target["op"]
        assert isinstance(value, (int, float)) and isinstance(threshold, (int, float)), target
        # the verdict is the comparison the report states, of the figure the runs measured
        assert op in _COMPARE, target
        assert target["passed"] is _COMPARE[op](value, threshold), target
        assert value == pytest.approx(_measured(scenarios, key)), target
    # not a timing figure: one cold blob, 20 clients, one upstream GET per repetition
    assert targets["herd_amplification_quayside-3"]["passed"] is True
    assert targets["herd_amplification_quayside-1"]["passed"] is True

    md = (out / "results.md").read_text()
    assert "## Targets" in md and "warm_blob" in md
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if " | " in line}
    for target in targets.values():  # the table says what results.json says
        row = rows[target["description"]]
        assert f"{target['value']:.2f} {target['unit']}" in row, row
        assert ("**pass**" if target["passed"] else "**FAIL**") in row, row
    assert list(out.glob("*.png")), "no plot written"
