"""Quayside's targets (issue 4), evaluated on the figures of one run.

Every target compares medians measured side by side in the same run (ratios), except the herd
and memory targets, which are absolute and judged on the worst repetition. A target whose
inputs are missing (a contender or scenario did not run or failed) has ``passed: None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.results import median_of

Scenarios = dict[str, dict[str, Any]]


def _runs(scenarios: Scenarios, scenario: str, contender: str, key: str) -> list[float]:
    entry = scenarios.get(scenario, {}).get("contenders", {}).get(contender, {})
    return [float(r[key]) for r in entry.get("runs", []) if r.get(key) is not None]


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _target(
    key: str,
    description: str,
    value: float | None,
    threshold: float,
    op: str,
    unit: str,
    detail: str,
) -> dict[str, Any]:
    compare: dict[str, Callable[[float, float], bool]] = {
        ">=": lambda v, t: v >= t,
        "<=": lambda v, t: v <= t,
    }
    passed = None if value is None else compare[op](value, threshold)
    return {
        "key": key,
        "description": description,
        "value": value,
        "threshold": threshold,
        "op": op,
        "unit": unit,
        "passed": passed,
        "detail": detail,
    }


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "n/a" if v is None else format(v, spec)


def evaluate(
    scenarios: Scenarios, quayside: str = "quayside-1", *, herd_clients: int | None = None
) -> list[dict[str, Any]]:
    """The targets, each ``{key, description, value, threshold, op, unit, passed, detail}``."""
    out: list[dict[str, Any]] = []
    warm = scenarios.get("warm_blob")
    for n in (1, 16):
        q = median_of(warm, quayside, f"mb_s_c{n}")
        s = median_of(warm, "nginx-static", f"mb_s_c{n}")
        out.append(
            _target(
                f"warm_blob_c{n}",
                f"warm blob, {n} client{'s' if n > 1 else ''}: {quayside} / nginx-static throughput",
                _ratio(q, s),
                0.9,
                ">=",
                "x",
                f"{quayside} {_fmt(q, '.0f')} MB/s, nginx-static {_fmt(s, '.0f')} MB/s",
            )
        )
    cold = scenarios.get("cold_blob")
    q = median_of(cold, quayside, "total_s")
    d = median_of(cold, "direct", "total_s")
    out.append(
        _target(
            "cold_blob_total",
            f"cold blob, one client: {quayside} / direct total time",
            _ratio(q, d),
            1.3,
            "<=",
            "x",
            f"{quayside} {_fmt(q, '.3f')} s, direct {_fmt(d, '.3f')} s",
        )
    )
    herd = scenarios.get("herd")
    clients = (herd or {}).get("params", {}).get("clients", herd_clients)
    ref = median_of(herd, "reference-proxy", "amplification")
    ref_gets = median_of(herd, "reference-proxy", "upstream_gets")
    for name in ("quayside-3", quayside):
        amps = _runs(scenarios, "herd", name, "amplification")
        gets = _runs(scenarios, "herd", name, "upstream_gets")
        out.append(
            _target(
                f"herd_amplification_{name}",
                f"herd of {clients} clients on one cold blob: {name} upstream amplification "
                "(worst repetition)",
                max(amps) if amps else None,
                1.0,
                "<=",
                "x",
                f"{name} upstream GETs per repetition {[int(g) for g in gets]}; "
                f"reference-proxy amplification {_fmt(ref)} ({_fmt(ref_gets, '.0f')} GETs)",
            )
        )
    tag = scenarios.get("manifest_tag")
    q = median_of(tag, quayside, "rps")
    r = median_of(tag, "reference-proxy", "rps")
    out.append(
        _target(
            "manifest_tag_rps",
            f"warm manifest by tag: {quayside} / reference-proxy requests/s",
            _ratio(q, r),
            10.0,
            ">=",
            "x",
            f"{quayside} {_fmt(q, '.0f')} req/s, reference-proxy {_fmt(r, '.0f')} req/s",
        )
    )
    peaks = _runs(scenarios, "edge_rss", quayside, "peak_rss_mb")
    out.append(
        _target(
            "edge_peak_rss",
            f"{quayside} peak RSS (VmHWM) while serving concurrent large downloads",
            max(peaks) if peaks else None,
            150.0,
            "<=",
            "MB",
            "nginx-cache {} MB, reference-proxy {} MB".format(
                _fmt(median_of(scenarios.get("edge_rss"), "nginx-cache", "peak_rss_mb")),
                _fmt(median_of(scenarios.get("edge_rss"), "reference-proxy", "peak_rss_mb")),
            ),
        )
    )
    return out
