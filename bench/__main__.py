"""``quayside bench`` (also ``python -m bench``): Quayside beside its peers, on this machine.

    quayside bench [--quick] [--out DIR] [--scenario NAME ...] [--contender NAME ...]
                   [--clients N] [--repeats R] [--latest | --no-latest]

Starts every topology itself on loopback (docker-registry and the Quayside origin as upstreams;
Quayside edge with 1 and 3 nodes + redis-server, docker-registry's proxy mode, an nginx cache,
the upstream directly and nginx serving the blob file), runs the scenarios and writes
``results.json``, ``results.md`` and PNG plots to ``bench/results/<UTC timestamp>/`` (or
``--out``). A full run with the default output directory also refreshes
``bench/results/latest.md`` and ``bench/results/latest/`` (``--latest``/``--no-latest``
override). Exit status: 0 when every scenario ran (targets may still be missed: see the
table), 1 when a scenario or contender failed, 130 on Ctrl-C, 143 on SIGTERM and 129 on SIGHUP
(which stop the run the way Ctrl-C does: every process, namespace and the temp dir go, the
partial results are written; see :mod:`bench.stopping`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.params import CONTENDERS, SCENARIOS, Params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, fewer repetitions (under 3 minutes)"
    )
    parser.add_argument(
        "--out", metavar="DIR", help="results directory (default: bench/results/<UTC timestamp>)"
    )
    parser.add_argument(
        "--scenario",
        metavar="NAME",
        nargs="+",
        action="extend",
        choices=SCENARIOS,
        help=f"run only these scenarios (of: {', '.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--contender",
        metavar="NAME",
        nargs="+",
        action="extend",
        choices=CONTENDERS,
        help=f"run only these contenders (of: {', '.join(CONTENDERS)})",
    )
    parser.add_argument(
        "--clients", type=int, metavar="N", help="herd clients (default 50, quick 20)"
    )
    parser.add_argument("--repeats", type=int, metavar="R", help="repetitions per scenario")
    parser.add_argument(
        "--latest",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="copy the results to bench/results/latest.md (default: full runs to the default --out)",
    )


def params_from_args(args: argparse.Namespace) -> Params:
    base = Params.quick() if getattr(args, "quick", False) else Params.full()
    repeats = getattr(args, "repeats", None)
    if repeats is not None and repeats < 1:
        raise ValueError("--repeats must be at least 1")
    clients = getattr(args, "clients", None)
    if clients is not None and clients < 1:
        raise ValueError("--clients must be at least 1")
    scenarios = getattr(args, "scenario", None)
    contenders = getattr(args, "contender", None)
    return base.with_overrides(
        repeats=repeats,
        warm_repeats=repeats,
        herd_repeats=repeats,
        manifest_repeats=repeats,
        image_repeats=repeats,
        wan_repeats=repeats,
        push_repeats=repeats,
        herd_clients=clients,
        scenarios=tuple(dict.fromkeys(scenarios)) if scenarios else None,
        contenders=tuple(dict.fromkeys(contenders)) if contenders else None,
    )


def _summary_tables(results: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    tables = []
    t = Table(title="Targets (Quayside, this run)")
    for col in ("target", "measured", "threshold", "result"):
        t.add_column(col)
    for tg in results.get("targets", []):
        value = "n/a" if tg["value"] is None else f"{tg['value']:.2f} {tg['unit']}"
        result = {True: "[green]pass", False: "[red]FAIL", None: "[yellow]not measured"}[
            tg["passed"]
        ]
        t.add_row(tg["description"], value, f"{tg['op']} {tg['threshold']:g}", result)
    tables.append(t)
    for sc in results.get("scenarios", {}).values():
        metrics = [m for m in sc["metrics"] if m["better"] != "none"][:4] or sc["metrics"][:4]
        note = f" [red]({sc['error']})" if sc.get("error") else ""
        if sc.get("skipped"):
            note = f" [yellow](skipped: {sc['skipped']})"
        st = Table(title=f"{sc['title']}{note}")
        st.add_column("contender")
        for m in metrics:
            st.add_column(
                f"{m['label']}" + (f" [{m['unit']}]" if m["unit"] else ""), justify="right"
            )
        for cname, entry in sc["contenders"].items():
            cells = []
            for m in metrics:
                med = entry["summary"][m["key"]]["median"]
                cells.append("-" if med is None else f"{med:.4g}")
            if entry.get("errors") and all(c == "-" for c in cells):
                cells = ["[red]error", *cells[1:]]
            st.add_row(cname, *cells)
        tables.append(st)
    return tables


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bench import stopping, suite

    console = Console()
    try:
        params = params_from_args(args)
    except ValueError as exc:
        console.print(f"[red]quayside bench: {exc}")
        return 2
    out = getattr(args, "out", None)
    out_dir = Path(out) if out else suite.default_out_dir()
    latest = getattr(args, "latest", None)
    if latest is None:
        latest = out is None and params.mode == "full"
    console.print(f"[bold]quayside bench[/] ({params.mode}) → {out_dir}")
    try:
        # SIGTERM/SIGHUP raise stopping.Terminated (a KeyboardInterrupt) here, in the main
        # thread: the run stops its processes, namespaces and temp dir as on Ctrl-C
        with stopping.terminate_like_ctrl_c():
            results = suite.run(params, out_dir, console=console)
    except stopping.Terminated as exc:
        console.print(f"[yellow]terminated ({exc.name}); partial results in {out_dir}")
        return exc.exit_status
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted; partial results in {out_dir}")
        return 130
    for table in _summary_tables(results):
        console.print(table)
    if latest:
        md = suite.publish_latest(out_dir, results)
        console.print(f"latest: {md}")
    console.print(f"results: {out_dir / 'results.md'} ({results['duration_s']:.0f} s)")
    failed = (
        results.get("contender_failures")
        or (results.get("wan") or {}).get("contender_failures")
        or any(  # a peer's stumble (e.g. registry:2's proxy answering one 500) is reported in
            # the results, not a failure of the run: only ours must not err
            sc.get("error")
            or any(e["errors"] for n, e in sc["contenders"].items() if n.startswith("quayside"))
            for sc in results["scenarios"].values()
        )
    )
    return 1 if failed else 0


def _standalone() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(_standalone())
