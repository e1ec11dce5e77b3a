"""PNG plots with matplotlib (Agg backend, no display): one figure per scenario.

Bars are medians, whiskers span min..max over the repetitions; Quayside contenders are blue,
peers orange, baselines grey. :func:`render_all` returns ``{scenario: [file names]}`` for the
figures it wrote; a scenario without figures is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_COLORS = {"quayside": "#1f77b4", "peer": "#ff7f0e", "baseline": "#8c8c8c"}
_HATCHES = ("", "//", "..", "xx")


def _label(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _series(scenario: dict[str, Any], key: str) -> tuple[list[str], list[float], list[list[float]]]:
    names, meds, errs_lo, errs_hi = [], [], [], []
    for name, entry in scenario["contenders"].items():
        s = entry["summary"].get(key, {})
        if s.get("median") is None:
            continue
        names.append(name)
        meds.append(s["median"])
        errs_lo.append(s["median"] - s["min"])
        errs_hi.append(s["max"] - s["median"])
    return names, meds, [errs_lo, errs_hi]


def _bars(
    ax: Any,
    scenario: dict[str, Any],
    contenders: dict[str, dict[str, Any]],
    keys: list[tuple[str, str]],
    xlabel: str,
    *,
    log: bool = False,
) -> bool:
    """Horizontal grouped bars: one group per contender, one bar per ``(key, legend)``."""
    order = [n for n in scenario["contenders"] if any(
        scenario["contenders"][n]["summary"].get(k, {}).get("median") is not None for k, _ in keys
    )]  # fmt: skip
    if not order:
        return False
    height = 0.8 / len(keys)
    for j, (key, legend) in enumerate(keys):
        names, meds, errs = _series(scenario, key)
        ys = [order.index(n) + (j - (len(keys) - 1) / 2) * height for n in names]
        colors = [_COLORS.get(contenders.get(n, {}).get("kind", ""), "#444") for n in names]
        ax.barh(
            ys,
            meds,
            height=height * 0.95,
            xerr=errs,
            color=colors,
            hatch=_HATCHES[j % 4],
            edgecolor="white",
            capsize=2,
            label=legend if len(keys) > 1 else None,
        )
        for y, m, hi in zip(ys, meds, errs[1], strict=True):
            ax.annotate(
                _label(m),
                (m + hi, y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
    ax.set_yticks(range(len(order)), order)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    if log:
        ax.set_xscale("log")
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.15)
    if len(keys) > 1:
        ax.legend(
            fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.18),
            ncol=len(keys),
            frameon=False,
        )
    return True


_LAYOUTS: dict[str, list[tuple[str, list[tuple[str, str]], str, bool]]] = {
    "warm_blob": [("Warm blob throughput (higher is better)",
                   [("mb_s_c1", "1 client"), ("mb_s_c16", "16 clients")], "MB/s", False)],
    "cold_blob": [("Cold blob, one client: latency (lower is better)",
                   [("ttfb_s", "first byte"), ("total_s", "total")], "seconds", False)],
    "herd": [("Herd: upstream amplification (1.0 = one fetch)",
              [("amplification", "upstream bytes / blob size")], "x (log)", True),
             ("Herd: per-client time", [("client_median_s", "median"),
                                        ("client_max_s", "max")], "seconds", False)],
    "manifest_tag": [("Manifest by tag: throughput", [("rps", "req/s")], "requests/s (log)", True),
                     ("Manifest by tag: latency", [("p50_ms", "p50"), ("p99_ms", "p99")],
                      "ms (log)", True)],
    "manifest_digest": [("Manifest by digest: throughput", [("rps", "req/s")],
                         "requests/s (log)", True),
                        ("Manifest by digest: latency", [("p50_ms", "p50"), ("p99_ms", "p99")],
                         "ms (log)", True)],
    "image_pull": [("Image pull with skopeo (lower is better)",
                    [("cold_s", "cold"), ("warm_s", "warm")], "seconds", False)],
    "edge_rss": [("Peak RSS while serving concurrent large downloads",
                  [("peak_rss_mb", "VmHWM"), ("sampled_peak_mb", "sampled during rounds")],
                  "MB", False)],
    "wan_link": [("WAN as seen from the region", [("rtt_ms", "request RTT"),
                                                  ("connect_ms", "new connection")], "ms", False),
                 ("Throughput", [("link_mb_s", "across the link"),
                                 ("relay_mb_s", "relay, no delay")], "MB/s (log)", True)],
    "wan_pull": [("Image pull across the WAN (lower is better)",
                  [("cold_s", "cold"), ("warm_s", "warm")], "seconds", False),
                 ("Link payload per cold pull (1.0 = one copy)",
                  [("link_ratio", "link / image")], "x", False)],
    "wan_region": [("Region on one cold image: link payload (1.0 = one copy)",
                    [("link_copies", "link / image")], "x (log)", True),
                   ("Pull time per client", [("p50_s", "p50"), ("p99_s", "p99")],
                    "seconds", False)],
    "wan_cut": [("Upstream cut mid-blob: longest pause in a client's body",
                 [("max_gap_s", "max gap")], "seconds", False),
                ("Clients with every byte right", [("clients_ok", "clients ok")], "clients",
                 False)],
    "origin_push": [("Push of a large image (lower is better)", [("push_s", "push")], "seconds",
                     False),
                    ("Target memory", [("peak_rss_mb", "VmHWM")], "MB", False)],
}  # fmt: skip


_LIMITS: dict[str, list[tuple[int, float, str]]] = {
    "edge_rss": [(0, 64, " target 64 MB")],
    "wan_region": [(0, 1.0, " one copy")],
    "wan_cut": [(0, 1.0, " target 1 s")],
    "origin_push": [(1, 100, " target 100 MB")],
}


def render_all(results: dict[str, Any], out_dir: Path) -> dict[str, list[str]]:
    """Write one PNG per scenario with data into ``out_dir``; return the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[str, list[str]] = {}
    contenders = results.get("contenders", {})
    for name, scenario in results.get("scenarios", {}).items():
        layout = _LAYOUTS.get(name)
        if not layout:
            continue
        rows = len(scenario["contenders"]) or 1
        fig, axes = plt.subplots(
            1, len(layout), figsize=(5.5 * len(layout), 1.6 + 0.55 * rows), squeeze=False
        )
        drew = False
        for ax, (title, keys, xlabel, log) in zip(axes[0], layout, strict=True):
            ax.set_title(title, fontsize=9)
            drew |= _bars(ax, scenario, contenders, keys, xlabel, log=log)
        for col, limit, text in _LIMITS.get(name, []):
            if drew:
                axes[0][col].axvline(limit, color="red", lw=1, ls="--")
                axes[0][col].annotate(text, (limit, rows - 0.6), fontsize=7, color="red")
        if drew:
            fig.suptitle(f"{scenario['title']} — {results.get('mode')} run", fontsize=10)
            fig.tight_layout()
            png = f"{name}.png"
            fig.savefig(out_dir / png, dpi=110)
            written[name] = [png]
        plt.close(fig)
    return written
