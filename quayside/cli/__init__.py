"""The ``quayside`` command: one rich ``--help`` tree for every component.

Convention: one module per command group, ``quayside/cli/<group>.py``, exposing a module-level
``command`` (a :class:`click.Group` or :class:`click.Command`) whose name is the group's, and a
docstring whose first line reads: ``quayside <group> ...``: <summary>. The root group
imports a module only when its command runs (or its own ``--help`` is asked for); the root's
command list shows each module's summary read from its source, so ``quayside --help`` imports
no command module at all. A command module should import the server, benchmark or library it
drives *inside* its callback, so that its own ``--help`` stays light too. Adding a group is one
line in :data:`COMMANDS`.

Exit status: what the command returns (``ctx.exit``); 2 for a usage error (unknown command,
bad option), as click does.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

import click
import rich_click

# The registry: command name -> module exposing ``command``. Listed in this order in --help.
COMMANDS: dict[str, str] = {
    "origin": "quayside.cli.origin",
    "edge": "quayside.cli.edge",
    "run": "quayside.cli.run",
    "demo-image": "quayside.cli.demo_image",
    "users": "quayside.cli.users",
    "robots": "quayside.cli.robots",
    "audit": "quayside.cli.audit",
    "certs": "quayside.cli.certs",
    "ls": "quayside.cli.ls",
    "gc": "quayside.cli.gc",
    "retention": "quayside.cli.retention",
    "backup": "quayside.cli.backup",
    "restore": "quayside.cli.restore",
    "scrub": "quayside.cli.scrub",
    "replicate": "quayside.cli.replicate",
    "bench": "quayside.cli.bench",
    "doctor": "quayside.cli.doctor",
    "scan": "quayside.cli.scan",
    "healthcheck": "quayside.cli.healthcheck",
}

LOG_LEVELS = ("debug", "info", "warning", "error")


class LazyGroup(rich_click.RichGroup):
    """A group whose subcommands live in modules imported on first use (see :data:`COMMANDS`).

    :meth:`get_command` (what help listings and completion ask) answers a stand-in carrying the
    module's summary; :meth:`resolve_command` (what running a command asks) and :meth:`load`
    import the module and return its real ``command``.

    Raises:
        TypeError: a registered module has no ``command`` (a bug, found by the --help test).
    """

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *sorted(n for n in super().list_commands(ctx) if n not in self.lazy)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        summary = module_summary(self.lazy[cmd_name])
        return rich_click.RichCommand(cmd_name, help=summary, short_help=summary)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name in self.lazy:
            command = self.load(name)
        return name, command, rest

    def load(self, cmd_name: str) -> click.Command:
        """Import the module registered for ``cmd_name`` and return its ``command``."""
        module = importlib.import_module(self.lazy[cmd_name])
        command = getattr(module, "command", None)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy[cmd_name]} has no click command named 'command'")
        return command


_PREFIX = re.compile(r"^``[^`]*``(\s*\([^)]*\))?:\s*")


def module_summary(module: str) -> str:
    """The first docstring line of ``module`` without its ``quayside x``: prefix and without
    reST backquotes, read from the source (the module is not imported)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
    first = _PREFIX.sub("", doc.strip().split("\n", 1)[0]).replace("``", "")
    return first[:1].upper() + first[1:]


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def root() -> None:
    """Quayside: a pull-through caching edge and the private origin registry behind it.

    Start with `quayside run` (an origin and an edge on this machine, no configuration).
    """


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line (``argv`` defaults to ``sys.argv[1:]``); exits the process."""
    root.main(args=list(argv) if argv is not None else None, prog_name="quayside")
