"""The ``quayside`` command: one ``--help`` tree for every component.

Each component module exposes ``add_arguments(parser)`` and ``main(args) -> int``; they are
imported lazily so ``quayside --help`` stays fast and a missing optional dependency (matplotlib
for bench) only matters for the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# (command path, module, help)
_COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("origin", "serve"), "origin.__main__", "serve the private origin registry"),
    (("edge", "serve"), "edge.__main__", "serve a pull-through caching edge node"),
    (("run",), "regcore.run", "start an origin and an edge in front of it (embedded defaults)"),
    (
        ("bench",),
        "bench.__main__",
        "benchmark Quayside against peer registries/caches on this machine",
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quayside",
        description="Quayside: a pull-through caching edge and private origin registry for container images.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, module, help_text in _COMMANDS:
        if len(path) == 1:
            p = sub.add_parser(path[0], help=help_text, description=help_text)
        else:
            if path[0] not in groups:
                g = sub.add_parser(
                    path[0], help=f"{path[0]} commands", description=f"{path[0]} commands"
                )
                groups[path[0]] = g.add_subparsers(
                    dest="subcommand", metavar="SUBCOMMAND", required=True
                )
            p = groups[path[0]].add_parser(path[1], help=help_text, description=help_text)
        p.set_defaults(_module=module)
        p.set_defaults(_deferred=True)
        _add_module_arguments(p, module)
    return parser


def _add_module_arguments(parser: argparse.ArgumentParser, module: str) -> None:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:  # component not available: keep the rest of the tree usable
        parser.set_defaults(_import_error=str(exc))
        return
    add = getattr(mod, "add_arguments", None)
    if add is not None:
        add(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_import_error", None):
        print(f"quayside: {args.command} is unavailable: {args._import_error}", file=sys.stderr)
        return 2
    mod = importlib.import_module(args._module)
    return int(mod.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
