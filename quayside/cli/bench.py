"""``quayside bench``: Quayside beside its peers on this machine (see ``bench/README.md``).

The flags are those of ``python -m bench`` (:func:`bench.__main__.add_arguments`);
``--scenario`` and ``--contender`` take one or more names (``--scenario herd cold_blob``) and
may be repeated. The suite (and matplotlib) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

import click as _click
import rich_click as click

from bench.params import CONTENDERS, SCENARIOS

_VARIADIC = ("--scenario", "--contender")


def spread_variadic(args: Sequence[str], options: Sequence[str] = _VARIADIC) -> list[str]:
    """``--scenario a b --quick`` -> ``--scenario a --scenario b --quick`` (argparse's nargs="+"
    for click, which has no variadic options)."""
    out: list[str] = []
    current: str | None = None
    for arg in args:
        if arg == "--":
            current = None
        elif arg.startswith("-"):
            current = arg if arg in options else None
        elif current is not None and out[-1] != current:
            out.append(current)
        out.append(arg)
    return out


class _BenchCommand(click.RichCommand):
    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_variadic(args))


@click.command("bench", cls=_BenchCommand)
@click.option("--quick", is_flag=True, help="small sizes, fewer repetitions (under 3 minutes)")
@click.option(
    "--out", metavar="DIR", help="results directory (default: bench/results/<UTC timestamp>)"
)
@click.option(
    "--scenario",
    metavar="NAME ...",
    multiple=True,
    type=click.Choice(SCENARIOS),
    help=f"run only these scenarios (of: {', '.join(SCENARIOS)})",
)
@click.option(
    "--contender",
    metavar="NAME ...",
    multiple=True,
    type=click.Choice(CONTENDERS),
    help=f"run only these contenders (of: {', '.join(CONTENDERS)})",
)
@click.option("--clients", type=int, metavar="N", help="herd clients (default 50, quick 20)")
@click.option("--repeats", type=int, metavar="R", help="repetitions per scenario")
@click.option(
    "--latest/--no-latest",
    default=None,
    help="copy the results to bench/results/latest.md (default: full runs to the default --out)",
)
@click.pass_context
def command(ctx: click.Context, **options: object) -> None:
    """Benchmark Quayside against peer registries and caches on this machine.

    Starts every topology itself on loopback and writes results.json, results.md and PNG plots.
    Exit status: 0 when every scenario ran (targets may still be missed), 1 when a scenario or
    contender failed, 130 on Ctrl-C, 143 on SIGTERM, 129 on SIGHUP (each stops every server
    and removes the temp dir; partial results are written).
    """
    from bench.__main__ import main

    ctx.exit(main(to_namespace(options)))


def to_namespace(params: Mapping[str, object]) -> argparse.Namespace:
    """Parsed options as the namespace ``bench.__main__.main`` takes (argparse's ``extend``:
    ``None`` when a list option was not given)."""
    out = dict(params)
    for key in ("scenario", "contender"):
        out[key] = list(out.get(key) or ()) or None  # type: ignore[call-overload]
    return argparse.Namespace(**out)
