"""The `quayside` command: one --help tree, every command answers --help with exit 0."""

from __future__ import annotations

import subprocess
import sys

import pytest

from regcore.cli import _COMMANDS, build_parser

COMMANDS = [list(path) for path, _, _ in _COMMANDS]


@pytest.mark.parametrize("argv", [[], *COMMANDS, ["origin"], ["edge"]], ids=" ".join)
def test_every_command_has_help(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "regcore.cli", *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: quayside")
    assert "unavailable" not in out.stdout


def test_tree_lists_every_component() -> None:
    text = build_parser().format_help()
    for name in ("origin", "edge", "run", "bench"):
        assert name in text


def test_unknown_command_is_a_usage_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "regcore.cli", "frobnicate"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "invalid choice" in out.stderr
