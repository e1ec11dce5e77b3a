"""Quayside's targets (issues 4 and 10), evaluated on the figures of one run.

Every target compares medians measured side by side in the same run (ratios), except the herd,
memory, link-byte and fault targets, which are absolute and judged on the worst repetition. A
target whose inputs are missing (a contender or scenario did not run, failed or was skipped)
has ``passed: None``. Thresholds are the issues' own (issue 10 tightened the warm-blob and
memory ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.results import median_of

Scenarios = dict[str, dict[str, Any]]


def _runs(scenarios: Scenarios, scenario: str, contender: str, key: str) -> list[float]:
    entry = scenarios.get(scenario, {}).get("contenders", {}).get(contender, {})
    return [float(r[key]) for r in entry.get("runs", []) if r.get(key) is not None]


def _run_median(scenarios: Scenarios, contender: str, key: str) -> float | None:
    """The median over cold_blob's runs of a per-run figure that is not a ranked metric."""
    values = sorted(_runs(scenarios, "cold_blob", contender, key))
    return values[len(values) // 2] if values else None


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
                0.95 if n == 1 else 1.0,
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
    r = median_of(cold, "reference-proxy", "total_s")
    out.append(
        _target(
            "cold_blob_vs_reference",
            f"cold blob, one client: {quayside} / reference-proxy total time",
            _ratio(q, r),
            1.0,
            "<=",
            "x",
            f"{quayside} {_fmt(q, '.3f')} s, reference-proxy {_fmt(r, '.3f')} s",
        )
    )
    cpu = median_of(cold, quayside, "cpu_vs_sha256")
    floor = median_of(cold, quayside, "cpu_vs_floor")
    sha = _run_median(scenarios, quayside, "sha256_s_per_gib")
    floor_s = _run_median(scenarios, quayside, "floor_s_per_gib")
    unhashed = _run_median(scenarios, quayside, "floor_unhashed_s_per_gib")
    out.append(
        _target(
            "cold_blob_cpu",
            f"cold blob, one client: {quayside} CPU per GiB / SHA-256 time, same bytes",
            cpu,
            1.5,
            "<=",
            "x",
            f"{quayside} {_fmt(median_of(cold, quayside, 'cpu_s_per_gib'), '.2f')} s/GiB, "
            f"SHA-256 {_fmt(sha, '.2f')} s/GiB, "
            f"verifying relay floor {_fmt(floor_s, '.2f')} s/GiB "
            f"= {_fmt(_ratio(floor_s, sha), '.2f')} x SHA-256 (CPU / floor {_fmt(floor, '.2f')} x), "
            f"the same relay without hashing (receive, write, send) {_fmt(unhashed, '.2f')} "
            f"s/GiB = {_fmt(_ratio(unhashed, sha), '.2f')} x SHA-256; "
            "reference-proxy "
            f"{_fmt(median_of(cold, 'reference-proxy', 'cpu_vs_sha256'), '.2f')} x",
        )
    )
    gets = _runs(scenarios, "cold_blob", quayside, "upstream_gets")
    out.append(
        _target(
            "cold_blob_upstream_gets",
            f"cold blob, one client: {quayside} upstream GETs (worst repetition)",
            max(gets) if gets else None,
            1.0,
            "<=",
            "",
            f"per repetition {[int(g) for g in gets]}",
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
            64.0,
            "<=",
            "MB",
            "nginx-cache {} MB, reference-proxy {} MB".format(
                _fmt(median_of(scenarios.get("edge_rss"), "nginx-cache", "peak_rss_mb")),
                _fmt(median_of(scenarios.get("edge_rss"), "reference-proxy", "peak_rss_mb")),
            ),
        )
    )
    return out + _wan(scenarios) + _push(scenarios)


def _worst(scenarios: Scenarios, scenario: str, names: tuple[str, ...], key: str) -> list[float]:
    return [v for n in names for v in _runs(scenarios, scenario, n, key)]


def _wan(scenarios: Scenarios) -> list[dict[str, Any]]:
    out = []
    link = scenarios.get("wan_link")
    rtt = median_of(link, "direct", "rtt_ms")
    want = (link or {}).get("params", {}).get("configured_rtt_ms")
    out.append(
        _target(
            "wan_rtt",
            "WAN: request RTT seen from the region vs configured (|deviation|)",
            None if rtt is None or not want else abs(rtt / want - 1),
            0.2,
            "<=",
            "",
            f"measured median {_fmt(rtt)} ms, configured {_fmt(want, 'g')} ms",
        )
    )
    relay = median_of(link, "direct", "relay_mb_s")
    rate = (link or {}).get("params", {}).get("rate_mbit")
    out.append(
        _target(
            "wan_relay_headroom",
            "WAN: delaying relay's own throughput / link rate (the relay is not the bottleneck)",
            None if relay is None or not rate else relay / (rate / 8),
            2.0,
            ">=",
            "x",
            f"relay without delay {_fmt(relay, '.0f')} MB/s, link {_fmt(rate, 'g')} Mbit/s",
        )
    )
    pull = scenarios.get("wan_pull")
    q = median_of(pull, "quayside-1", "cold_s")
    d = median_of(pull, "direct", "cold_s")
    out.append(
        _target(
            "wan_pull_cold",
            "WAN: cold image pull, quayside-1 / direct time",
            _ratio(q, d),
            1.1,
            "<=",
            "x",
            f"quayside-1 {_fmt(q, '.2f')} s, direct {_fmt(d, '.2f')} s; quayside-3 "
            f"{_fmt(median_of(pull, 'quayside-3', 'cold_s'), '.2f')} s",
        )
    )
    ratios = _worst(scenarios, "wan_pull", ("quayside-1", "quayside-3"), "link_ratio")
    out.append(
        _target(
            "wan_pull_link_bytes",
            "WAN: cold image pull, link payload / image size, quayside-1 and -3 (worst)",
            max(ratios) if ratios else None,
            1.01,
            "<=",
            "x",
            "direct {}, reference-proxy {}, nginx-cache {}".format(
                *(_fmt(median_of(pull, n, "link_ratio"), ".3f") for n in
                  ("direct", "reference-proxy", "nginx-cache"))
            ),
        )
    )  # fmt: skip
    region = scenarios.get("wan_region")
    copies = _runs(scenarios, "wan_region", "quayside-3", "link_copies")
    peers = []
    for name in ("reference-proxy", "nginx-cache"):
        runs = (region or {}).get("contenders", {}).get(name, {}).get("runs", [])
        capped = any(r.get("capped") for r in runs)
        peers.append(
            f"{name} {'>= ' if capped else ''}{_fmt(median_of(region, name, 'link_copies'), '.2f')}"
        )
    out.append(
        _target(
            "wan_region_copies",
            "WAN: region of 3 edges x clients on one cold image, quayside-3 link payload / "
            "image (worst)",
            max(copies) if copies else None,
            1.01,
            "<=",
            "x",
            "; ".join(peers)
            + f"; quayside-3 p50 {_fmt(median_of(region, 'quayside-3', 'p50_s'), '.2f')} s, "
            f"p99 {_fmt(median_of(region, 'quayside-3', 'p99_s'), '.2f')} s",
        )
    )
    names = ("quayside-1", "quayside-3")
    ok = _worst(scenarios, "wan_cut", names, "clients_ok")
    clients = _worst(scenarios, "wan_cut", names, "clients")
    gaps = _worst(scenarios, "wan_cut", names, "max_gap_s")
    out.append(
        _target(
            "wan_cut_clients",
            "WAN: upstream cut mid-blob, share of clients with every byte right, quayside-1 "
            "and -3 (worst)",
            min(o / c for o, c in zip(ok, clients, strict=True)) if ok else None,
            1.0,
            ">=",
            "",
            f"ranged upstream GETs {[int(g) for g in _worst(scenarios, 'wan_cut', names, 'range_gets')]}",
        )
    )
    out.append(
        _target(
            "wan_cut_stall",
            "WAN: upstream cut mid-blob, longest pause in any client's body (worst)",
            max(gaps) if gaps else None,
            1.0,
            "<=",
            "s",
            "a waiter never stalls longer than the reconnect + resume",
        )
    )
    return out


def _push(scenarios: Scenarios) -> list[dict[str, Any]]:
    push = scenarios.get("origin_push")
    o = median_of(push, "quayside-origin", "push_s")
    r = median_of(push, "docker-registry", "push_s")
    rss = _runs(scenarios, "origin_push", "quayside-origin", "peak_rss_mb")
    return [
        _target(
            "origin_push_time",
            "push of the large image: Quayside origin / registry:2 time",
            _ratio(o, r),
            1.0,
            "<=",
            "x",
            f"origin {_fmt(o, '.2f')} s, docker-registry {_fmt(r, '.2f')} s",
        ),
        _target(
            "origin_push_rss",
            "push of the large image: Quayside origin peak RSS (worst)",
            max(rss) if rss else None,
            100.0,
            "<=",
            "MB",
            f"docker-registry {_fmt(median_of(push, 'docker-registry', 'peak_rss_mb'))} MB",
        ),
    ]
