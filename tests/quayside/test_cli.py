"""The `quayside` command: one --help tree, every command answers --help with exit 0, the
flags of each component are the ones its own ``python -m`` parser has, and --help stays light."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable

import click
import pytest

from quayside.cli import COMMANDS, LazyGroup, module_summary, root


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    ctx = click.Context(group)
    out: list[list[str]] = []
    for name in group.list_commands(ctx):
        cmd = group.load(name) if isinstance(group, LazyGroup) else group.get_command(ctx, name)
        assert cmd is not None, name
        out.append([*prefix, name])
        if isinstance(cmd, click.Group):
            out.extend(_paths(cmd, (*prefix, name)))
    return out


COMMAND_PATHS = _paths(root)


def test_registry_and_tree_agree() -> None:
    top = [p[0] for p in COMMAND_PATHS if len(p) == 1]
    assert top == list(COMMANDS)
    for expected in (["origin", "serve"], ["edge", "serve"], ["run"], ["bench"]):
        assert expected in COMMAND_PATHS


@pytest.mark.parametrize("argv", [[], *COMMAND_PATHS], ids=" ".join)
def test_every_command_has_help(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "quayside", *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "Usage: quayside" in out.stdout
    assert "unavailable" not in out.stdout


def test_tree_lists_every_component() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "quayside", "--help"], capture_output=True, text=True, timeout=60
    )
    for name in ("origin", "edge", "run", "bench"):
        assert f" {name} " in out.stdout


def test_unknown_command_is_a_usage_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "quayside", "frobnicate"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "No such command 'frobnicate'" in out.stderr


_PROBE = """\
import sys
from quayside.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(" ".join(sorted(sys.modules)), file=sys.stderr)
"""
# Server applications and plotting: never imported by any --help.
_APPS = {"origin.app", "edge.app", "regcore.serving", "bench.suite", "matplotlib"}


def _modules_loaded_by(argv: list[str]) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    loaded = set(out.stderr.split())
    assert "quayside.cli" in loaded
    return loaded


def test_root_help_imports_no_command_module() -> None:
    """The command list comes from the modules' sources: none is imported, so a heavy or
    broken group cannot slow down or break `quayside --help`."""
    loaded = _modules_loaded_by(["--help"])
    assert not loaded & set(COMMANDS.values()), sorted(loaded & set(COMMANDS.values()))
    assert not loaded & (_APPS | {"aiohttp"})


@pytest.mark.parametrize("argv", COMMAND_PATHS, ids=" ".join)
def test_command_help_imports_no_server_app_and_no_matplotlib(argv: list[str]) -> None:
    loaded = _modules_loaded_by([*argv, "--help"])
    assert not loaded & _APPS, sorted(loaded & _APPS)


def test_root_listing_shows_each_module_summary() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "quayside", "--help"], capture_output=True, text=True, timeout=60
    )
    assert module_summary("quayside.cli.demo_image") == (
        "Write a tiny OCI image layout, offline, for a first push."
    )
    for module in COMMANDS.values():
        summary = module_summary(module)
        assert summary and "``" not in summary, module
        assert summary.split()[0] in out.stdout


# The flags: the same argv parsed by click and by the component's own argparse parser
# (``python -m origin|edge|bench``) gives the namespace its ``main`` reads.
def _argparse(add_arguments: Callable[[argparse.ArgumentParser], None], argv: list[str]) -> dict:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return vars(parser.parse_args(argv))


def _click(command: click.Command, argv: list[str], to_ns: Callable) -> dict:
    ctx = command.make_context(command.name or "", list(argv))
    return vars(to_ns(ctx.params))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--config", "c.yml", "--listen", "127.0.0.1:0", "--root", "/r", "--log-level", "debug"],
    ],
)
def test_origin_serve_flags_match_python_m_origin(argv: list[str]) -> None:
    from origin.__main__ import add_arguments
    from quayside.cli import origin

    serve = origin.command.commands["serve"]
    assert _click(serve, argv, origin.serve_namespace) == _argparse(add_arguments, argv)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--upstream", "http://h:1"],
        ["--upstream", "a=http://h:1", "--upstream", "http://h:2", "--cache-size", "1GiB"],
        ["--cache-dir", "/c", "--redis", "redis://r", "--advertise", "http://a:1"],
        ["--tag-ttl", "7", "--log-level", "warning", "--config", "e.yml", "--listen", ":0"],
    ],
)
def test_edge_serve_flags_match_python_m_edge(argv: list[str]) -> None:
    from edge.__main__ import add_arguments
    from quayside.cli import edge

    serve = edge.command.commands["serve"]
    assert _click(serve, argv, edge.serve_namespace) == _argparse(add_arguments, argv)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--quick", "--out", "/o", "--clients", "3", "--repeats", "2"],
        ["--scenario", "herd", "cold_blob", "--contender", "direct"],
        ["--scenario", "herd", "--quick", "--scenario", "warm_blob", "--no-latest"],
        ["--contender", "quayside-1", "nginx-cache", "--latest"],
    ],
)
def test_bench_flags_match_python_m_bench(argv: list[str]) -> None:
    from bench.__main__ import add_arguments
    from quayside.cli import bench

    assert _click(bench.command, argv, bench.to_namespace) == _argparse(add_arguments, argv)


def test_bench_rejects_an_unknown_scenario() -> None:
    from quayside.cli import bench

    with pytest.raises(click.BadParameter):
        bench.command.make_context("bench", ["--scenario", "herd", "nope"])
