"""``quayside bench --quick`` runs end to end and writes complete results (no timing asserts).

The suite starts its own processes on free loopback ports and its own temp dirs (the WAN
phase its own network namespaces), so this test can run beside any other test (``pytest -n``);
it only checks structure: every scenario is in ``results.json`` with a number for every
contender that ran it, the targets section is there, and ``results.md`` and at least one PNG
were written. The WAN scenarios run when namespaces can be made here (root) and are otherwise
reported as skipped with the reason; quick mode leaves the peers out of them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import netns

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

_TOOLS = ("docker-registry", "redis-server", "nginx", "wrk", "skopeo")
_LOOPBACK = {
    "edge_rss",
    "cold_blob",
    "herd",
    "warm_blob",
    "manifest_tag",
    "manifest_digest",
    "image_pull",
}
_WAN = {"wan_link", "wan_pull", "wan_region", "wan_cut"}
_SCENARIOS = _LOOPBACK | _WAN | {"origin_push"}


def _medians(scenario: dict[str, Any], contender: str, *keys: str) -> None:
    entry = scenario["contenders"][contender]
    assert entry["runs"], f"{contender}: no runs"
    for key in keys:
        median = entry["summary"][key]["median"]
        assert isinstance(median, (int, float)), f"{contender}/{key}: {median}"


def _check_wan(scenarios: dict[str, dict[str, Any]]) -> None:
    """The WAN scenarios ran (not skipped) with figures from the link for ours and direct."""
    for name in _WAN:
        assert scenarios[name]["skipped"] is None, f"{name}: {scenarios[name]['skipped']}"
        for contender, entry in scenarios[name]["contenders"].items():
            if contender.startswith("quayside"):
                assert not entry["errors"], f"{name}/{contender}: {entry['errors']}"
    _medians(scenarios["wan_link"], "direct", "rtt_ms", "connect_ms", "link_mb_s", "relay_mb_s")
    pull = scenarios["wan_pull"]
    _medians(pull, "direct", "cold_s", "link_ratio")
    for name in ("quayside-1", "quayside-3"):
        _medians(pull, name, "cold_s", "warm_s", "link_ratio", "speedup")
        # one copy of the image crossed the link (counted by the link), none on the warm pull
        assert pull["contenders"][name]["summary"]["link_ratio"]["max"] < 1.02
        assert pull["contenders"][name]["summary"]["warm_link_kb"]["max"] < 64
    region = scenarios["wan_region"]["contenders"]["quayside-3"]
    _medians(scenarios["wan_region"], "quayside-3", "link_copies", "p50_s", "p99_s", "wall_s")
    assert all(r["clients_done"] == r["clients"] for r in region["runs"])
    assert region["summary"]["link_copies"]["max"] < 1.02
    cut = scenarios["wan_cut"]
    for name in ("quayside-1", "quayside-3"):
        _medians(cut, name, "clients_ok", "max_gap_s", "wall_s", "link_ratio")
        for run in cut["contenders"][name]["runs"]:
            assert run["cuts"] == 1 and run["clients_ok"] == run["clients"], run
            assert run["range_gets"] >= 1, run  # the fill resumed by Range
    for run in cut["contenders"].get("direct", {}).get("runs", []):  # full runs only
        assert run["cuts"] == 1 and run["clients_ok"] == run["clients"] - 1, run


def test_quick_bench_writes_every_scenario_for_every_contender(tmp_path: Path) -> None:
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (make sysdeps)")
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "regcore.cli", "bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )
    assert (out / "results.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True
    assert results["mode"] == "quick"
    assert results["machine"]["cpu_count"] >= 1
    assert set(results["machine"]["tools"]) >= set(_TOOLS)
    assert not results["contender_failures"], results["contender_failures"]
    assert set(results["scenarios"]) == _SCENARIOS
    reason = netns.unavailable()
    if reason is None:
        _check_wan(results["scenarios"])
    else:
        for name in _WAN:
            assert results["scenarios"][name]["skipped"] == reason
    push = results["scenarios"]["origin_push"]
    assert push["error"] is None, push["error"]
    for name in ("quayside-origin", "docker-registry"):
        assert not push["contenders"][name]["errors"], push["contenders"][name]["errors"]
        _medians(push, name, "push_s", "peak_rss_mb", "cpu_s")
    for scenario in results["scenarios"].values():
        assert scenario["conditions"].get("foreign_cpu_share") is not None or scenario["skipped"]
    assert results["machine"]["git"]["commit"]

    for name in _LOOPBACK:
        scenario = results["scenarios"][name]
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
    for target in targets.values():
        assert isinstance(target["value"], (int, float)), target
        assert target["passed"] in (True, False)

    md = (out / "results.md").read_text()
    assert "## Targets" in md and "warm_blob" in md
    assert list(out.glob("*.png")), "no plot written"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
