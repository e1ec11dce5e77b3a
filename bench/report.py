"""``results.md``: the targets, then one table per scenario with Quayside-to-peer ratios.

Cells show ``median (min-max)`` over the repetitions. Ratios are Quayside's median divided by
the peer's median for the same figure; whether above or below 1 is better depends on the
figure (the table header says which). Plots are linked with a path prefix, so the same text
works inside the run directory and as ``bench/results/latest.md``.
"""

from __future__ import annotations

from typing import Any

from bench.results import HIGHER, LOWER

_QUAYSIDE_KIND = "quayside"


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a == 0:
        return "0"
    return f"{v:.3f}"


def _busy(m: dict[str, Any]) -> bool:
    """Whether the 1-minute load average exceeded half the CPUs at start or end."""
    cpus = m.get("cpu_count") or 1
    loads = [lst[0] for lst in (m.get("load_average_start"), m.get("load_average_end")) if lst]
    return any(x > cpus / 2 for x in loads)


def _cell(summary: dict[str, Any]) -> str:
    med = summary.get("median")
    if med is None:
        return "-"
    if summary.get("n", 0) > 1 and summary["min"] != summary["max"]:
        return f"{_num(med)} ({_num(summary['min'])}-{_num(summary['max'])})"
    return _num(med)


def _ratio(q: float | None, p: float | None) -> str:
    if q is None or p is None or p == 0:
        return "-"
    return f"x{q / p:.2f}"


def _header(metric: dict[str, Any]) -> str:
    unit = f" [{metric['unit']}]" if metric["unit"] else ""
    arrow = {HIGHER: " ↑", LOWER: " ↓"}.get(metric["better"], "")
    return f"{metric['label']}{unit}{arrow}"


def _table(rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return out


def scenario_section(
    name: str, scenario: dict[str, Any], contenders: dict[str, dict[str, Any]]
) -> list[str]:
    """Markdown lines for one scenario: description, figures table, ratio table, errors."""
    metrics = scenario["metrics"]
    lines = [f"## {scenario['title']} (`{name}`)", "", scenario["description"], ""]
    params = ", ".join(f"{k}={v}" for k, v in scenario.get("params", {}).items())
    if params:
        lines += [f"Parameters: {params}.", ""]
    if scenario.get("error"):
        lines += [f"**Incomplete:** {scenario['error']}", ""]
    entries = scenario["contenders"]
    rows = [["contender", *(_header(m) for m in metrics)]]
    for cname, entry in entries.items():
        rows.append([cname, *(_cell(entry["summary"][m["key"]]) for m in metrics)])
    lines += [*_table(rows), ""]
    ranked = [m for m in metrics if m["better"] in (HIGHER, LOWER)]
    quay = [n for n in entries if contenders.get(n, {}).get("kind") == _QUAYSIDE_KIND]
    peers = [n for n in entries if contenders.get(n, {}).get("kind") != _QUAYSIDE_KIND]
    ratio_rows = [["Quayside / peer (median)", *(_header(m) for m in ranked)]]
    for q in quay:
        for p in peers:
            cells = [
                _ratio(
                    entries[q]["summary"][m["key"]]["median"],
                    entries[p]["summary"][m["key"]]["median"],
                )
                for m in ranked
            ]
            if any(c != "-" for c in cells):
                ratio_rows.append([f"{q} / {p}", *cells])
    if len(ratio_rows) > 1:
        lines += [*_table(ratio_rows), ""]
    errors = [(n, e) for n, entry in entries.items() for e in entry.get("errors", [])]
    if errors:
        lines += ["Errors:", ""]
        lines += [f"- {n}: {e.splitlines()[0][:300]}" for n, e in errors[:10]]
        lines.append("")
    return lines


def targets_section(targets: list[dict[str, Any]]) -> list[str]:
    rows = [["target", "measured", "threshold", "result", "detail"]]
    for t in targets:
        value = "-" if t["value"] is None else f"{t['value']:.2f} {t['unit']}".strip()
        result = {True: "**pass**", False: "**FAIL**", None: "not measured"}[t["passed"]]
        rows.append([t["description"], value, f"{t['op']} {t['threshold']:g}", result, t["detail"]])
    return ["## Targets", "", *_table(rows), ""]


def render(results: dict[str, Any], *, image_prefix: str = "") -> str:
    """The whole ``results.md`` text for a results dict (as written to ``results.json``)."""
    m = results["machine"]
    tools = m.get("tools", {})
    lines = [
        f"# Quayside benchmark ({results['mode']} run, {results['started_at']})",
        "",
        "All contenders ran side by side on this machine over loopback, in one run; compare "
        "ratios, not absolute figures (CLIENTS.md: absolute figures drift 20-40 % between runs "
        "on shared machines).",
        "",
        f"Machine: {m['cpu_count']} x {m['cpu_model']}, {m['memory_gib']} GiB RAM, "
        f"kernel {m['kernel']}, Python {m['python']}; commit {m.get('git_commit') or '?'}. "
        f"Run took {results.get('duration_s', 0):.0f} s"
        + ("" if results.get("complete", True) else " (**incomplete**)")
        + ".",
        "",
        "Tools: " + "; ".join(f"{k}: {v}" for k, v in tools.items()) + ".",
        "",
        f"Load average (1/5/15 min) at start {m.get('load_average_start')}, "
        f"at end {m.get('load_average_end')}"
        + (
            " -- **other work was running on this machine; absolute figures are depressed.**"
            if _busy(m)
            else "."
        ),
        "",
        "Contenders: "
        + "; ".join(f"**{n}**: {c['description']}" for n, c in results["contenders"].items())
        + ".",
        "",
    ]
    if results.get("contender_failures"):
        lines += ["Contenders that did not start:", ""]
        lines += [f"- {n}: {e[:300]}" for n, e in results["contender_failures"].items()]
        lines.append("")
    lines += targets_section(results.get("targets", []))
    plots = results.get("plots", {})
    for name, scenario in results["scenarios"].items():
        lines += scenario_section(name, scenario, results["contenders"])
        for png in plots.get(name, []):
            lines += [f"![{name}]({image_prefix}{png})", ""]
    return "\n".join(lines).rstrip() + "\n"
