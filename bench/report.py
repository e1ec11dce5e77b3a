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


def _busy(results: dict[str, Any]) -> bool:
    """Whether other processes used a visible share of the CPUs during the run (older results
    without that figure: the 1-minute load average above half the CPUs at start)."""
    cond = results.get("conditions")
    if cond:
        return bool(cond.get("busy"))
    m = results["machine"]
    cpus = m.get("cpu_count") or 1
    start = m.get("load_average_start") or [0.0]
    return start[0] > cpus / 2


def _conditions(cond: dict[str, Any]) -> str:
    if not cond:
        return ""
    share = cond.get("foreign_cpu_share")
    text = (
        f"load average {cond.get('load_before', ['?'])[0]} -> {cond.get('load_after', ['?'])[0]}"
        + (f"; other processes used {share:.0%} of the CPUs" if share is not None else "")
    )
    return text + (" -- **busy machine: figures depressed**" if cond.get("busy") else "")


def _commit(m: dict[str, Any]) -> str:
    git = m.get("git") or {}
    short = git.get("short") or m.get("git_commit") or "?"
    text = f"commit {short}" + (f" ({git['date']})" if git.get("date") else "")
    changed = git.get("changed_files") or []
    if changed:
        text += f" plus uncommitted changes to {', '.join(changed[:8])}" + (
            " ..." if len(changed) > 8 else ""
        )
    return text


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
    if scenario.get("skipped"):
        return [*lines, f"**Skipped** (nothing measured): {scenario['skipped']}", ""]
    if scenario.get("conditions"):
        lines += [f"Conditions: {_conditions(scenario['conditions'])}.", ""]
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
    for note in scenario.get("notes", []):
        lines += [f"Note: {note}.", ""]
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


def wan_section(wan: dict[str, Any] | None) -> list[str]:
    """How the WAN was built in this run (or why it was not)."""
    if not wan:
        return []
    if wan.get("skipped"):
        return ["## WAN link", "", f"Not built: {wan['skipped']}; the wan_* scenarios were "
                "skipped.", ""]  # fmt: skip
    link = wan.get("link", {})
    lines = [
        "## WAN link",
        "",
        f"Region and upstream in their own network namespaces ({', '.join(link.get('namespaces', []))}), "
        f"joined by a veth pair; `tbf` at {link.get('rate_mbit')} Mbit/s each way "
        f"(burst {link.get('tbf_burst_bytes')} B, queue {link.get('tbf_limit_bytes')} B); "
        f"{wan.get('delay_ms_each_way')} ms each way added by one delaying relay per contender "
        "in the upstream namespace (connection set-up round trip and slow start emulated; "
        "the kernel has no netem). Bytes over the link: the link's own counters (region veth, "
        "tbf, and one counting htb class per relay port), TCP payload = bytes - "
        f"{link.get('header_bytes_per_packet')} B per packet.",
        "",
    ]
    if wan.get("contender_failures"):
        lines += [f"- did not start: {n}: {e[:200]}" for n, e in wan["contender_failures"].items()]
        lines.append("")
    return lines


def render(results: dict[str, Any], *, image_prefix: str = "") -> str:
    """The whole ``results.md`` text for a results dict (as written to ``results.json``)."""
    m = results["machine"]
    tools = m.get("tools", {})
    lines = [
        f"# Quayside benchmark ({results['mode']} run, {results['started_at']})",
        "",
        "All contenders ran side by side on this machine in one run, one at a time, over "
        "127.0.0.1"
        + (
            "; the `wan_*` scenarios across an emulated WAN link (network namespaces, a "
            "rate-limited veth pair and a delaying relay)"
            if any(n.startswith("wan_") for n in results["scenarios"])
            else ""
        )
        + "; see `bench/README.md` in the repository. Compare ratios within the run, not "
        "absolute figures: they drift with whatever else runs on the machine.",
        "",
        f"Code: {_commit(m)}. Machine: {m['cpu_count']} x {m['cpu_model']}, "
        f"{m['memory_gib']} GiB RAM, kernel {m['kernel']}, Python {m['python']}. "
        f"Run took {results.get('duration_s', 0):.0f} s"
        + ("" if results.get("complete", True) else " (**incomplete**)")
        + (f" (stopped by {results['terminated']})" if results.get("terminated") else "")
        + ".",
        "",
        "Tools: " + "; ".join(f"{k}: {v}" for k, v in tools.items()) + ".",
        "",
        f"Load average (1/5/15 min) at start {m.get('load_average_start')}, "
        f"at end {m.get('load_average_end')}"
        + (
            f"; over the run, {_conditions(results['conditions'])}"
            if results.get("conditions")
            else ""
        )
        + (
            ""
            if results.get("conditions")
            else " -- **other work was running on this machine; absolute figures are depressed.**"
            if _busy(results)
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
    lines += wan_section(results.get("wan"))
    plots = results.get("plots", {})
    for name, scenario in results["scenarios"].items():
        lines += scenario_section(name, scenario, results["contenders"])
        for png in plots.get(name, []):
            lines += [f"![{name}]({image_prefix}{png})", ""]
    return "\n".join(lines).rstrip() + "\n"
