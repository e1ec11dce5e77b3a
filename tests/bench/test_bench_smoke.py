"""``quayside bench --quick`` runs end to end and writes complete results (no timing asserts).

The suite starts its own processes on free loopback ports and its own temp dirs (the WAN
phase its own network namespaces), so this test can run beside any other test (``pytest -n``);
it asserts no timing: every scenario is in ``results.json`` with a number for every contender
that ran it; each target's figure is the one recomputed from the scenarios' numbers and its
verdict is that figure compared with its threshold as the report states it (``results.md``
shows the same figure and verdict); the herd targets (one upstream GET, not a timing) pass; at
least one PNG was written. The WAN scenarios run when namespaces can be made here (root) and
are otherwise reported as skipped with the reason (their targets then have no figure and no
verdict); quick mode leaves the peers out of them.
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
    if key == "cold_blob_vs_reference":
        return m("cold_blob", "quayside-1", "total_s") / m(
            "cold_blob", "reference-proxy", "total_s"
        )
    if key == "cold_blob_cpu":
        return m("cold_blob", "quayside-1", "cpu_vs_sha256")
    if key == "cold_blob_upstream_gets":
        return _worst(scenarios, "cold_blob", "quayside-1", "upstream_gets")
    if key == "wan_rtt":
        want = scenarios["wan_link"]["params"]["configured_rtt_ms"]
        return abs(m("wan_link", "direct", "rtt_ms") / want - 1)
    if key == "wan_relay_headroom":
        rate = scenarios["wan_link"]["params"]["rate_mbit"]
        return m("wan_link", "direct", "relay_mb_s") / (rate / 8)
    if key == "wan_pull_cold":
        return m("wan_pull", "quayside-1", "cold_s") / m("wan_pull", "direct", "cold_s")
    both = ("quayside-1", "quayside-3")
    if key == "wan_pull_link_bytes":
        return max(_worst(scenarios, "wan_pull", n, "link_ratio") for n in both)
    if key == "wan_region_copies":
        return _worst(scenarios, "wan_region", "quayside-3", "link_copies")
    if key == "wan_cut_clients":
        runs = [r for n in both for r in scenarios["wan_cut"]["contenders"][n]["runs"]]
        return min(r["clients_ok"] / r["clients"] for r in runs)
    if key == "wan_cut_stall":
        return max(_worst(scenarios, "wan_cut", n, "max_gap_s") for n in both)
    if key == "origin_push_time":
        return m("origin_push", "quayside-origin", "push_s") / m(
            "origin_push", "docker-registry", "push_s"
        )
    if key == "origin_push_rss":
        return _worst(scenarios, "origin_push", "quayside-origin", "peak_rss_mb")
    raise AssertionError(f"unknown target {key}: add how it is measured")


def test_quick_bench_writes_every_scenario_for_every_contender(tmp_path: Path) -> None:
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (make sysdeps)")
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "quayside", "bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=360,
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
    # every timed cold/herd request waited for the servers to go idle first; the floor is there
    for name in ("cold_blob", "herd"):
        for entry in results["scenarios"][name]["contenders"].values():
            assert all(isinstance(r["settled"], bool) and r["settle_s"] >= 0 for r in entry["runs"])
    warm = results["scenarios"]["warm_blob"]
    for entry in warm["contenders"].values():  # so did each warm one
        for n in warm["params"]["clients"]:
            assert all(r[f"settle_s_c{n}"] >= 0 for r in entry["runs"])
        # one client's figure covers several downloads: its wall time per download is kept
        assert warm["params"]["single_rounds"] >= 2
        assert all(r["wall_s_c1"] > 0 for r in entry["runs"])
    cold_runs = results["scenarios"]["cold_blob"]["contenders"]["quayside-1"]["runs"]
    # the verifying relay floor hashes every byte, so it costs at least SHA-256 alone
    assert all(r["floor_s_per_gib"] > 0.9 * r["sha256_s_per_gib"] for r in cold_runs)
    assert all(r["cpu_vs_floor"] > 0 for r in cold_runs)
    # and the same relay without the hash was measured beside it, each repetition
    assert all(r["floor_unhashed_s_per_gib"] > 0 for r in cold_runs)
    # its GETs went to its own view of the upstream, not into a contender's log
    direct_cold = results["scenarios"]["cold_blob"]["contenders"]["direct"]["runs"]
    assert [r["upstream_gets"] for r in direct_cold] == [1] * len(direct_cold)
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
        if value is None:  # only where its scenario could not run here (WAN without root)
            assert key.startswith("wan_") and reason is not None, target
            assert target["passed"] is None, target
            continue
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
        if target["value"] is None:
            assert "not measured" in row, row
            continue
        assert f"{target['value']:.2f} {target['unit']}" in row, row
        assert ("**pass**" if target["passed"] else "**FAIL**") in row, row
    assert list(out.glob("*.png")), "no plot written"
