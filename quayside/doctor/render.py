"""The doctor's report for people: a rich table, the client snippets, a summary line.

Scripts use ``--json`` (:meth:`quayside.doctor.results.Report.to_json`) instead; its shape is
``{"ok", "summary": {"pass", "warn", "fail", "skip"}, "checks": [{"group", "check", "status",
"detail", "fix"?, "data"?}], "hints": [{"client", "path", "text"}]}``.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from quayside.doctor.results import Report, Status

__all__ = ["render"]

_STYLE = {
    Status.PASS: ("PASS", "green"),
    Status.WARN: ("WARN", "yellow"),
    Status.FAIL: ("FAIL", "bold red"),
    Status.SKIP: ("skip", "dim"),
}
_LEXER = {"docker": "json", "containerd": "toml", "podman": "toml"}


def render(report: Report, console: Console, *, hints: bool = True) -> None:
    """Print ``report`` to ``console``."""
    table = Table(title="quayside doctor", show_lines=False, expand=True)
    table.add_column("", no_wrap=True)
    table.add_column("group", style="cyan", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("finding", ratio=3)
    table.add_column("fix", ratio=2, style="italic")
    for r in report.results:
        label, style = _STYLE[r.status]
        table.add_row(f"[{style}]{label}[/]", r.group, r.name, r.detail, r.fix)
    console.print(table)
    if hints and report.hints:
        panels = [
            Panel(
                Syntax(h.text, _LEXER.get(h.client, "text"), theme="ansi_dark", word_wrap=True),
                title=f"{h.client}: {h.path}",
                title_align="left",
            )
            for h in report.hints
        ]
        console.print(Group(*panels))
    counts = ", ".join(f"{report.count(s)} {s}" for s in Status)
    verdict = "[bold red]problems found[/]" if report.exit_code else "[green]no failed check[/]"
    console.print(f"{verdict} ({counts})")
