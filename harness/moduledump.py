"""Which modules a server process imported: ``quayside`` run by a launcher that writes
``sorted(sys.modules)`` to a JSON file when the process exits.

:class:`ModuleDumping` is a mixin for :class:`harness.servers.QuaysideServer` subclasses
(``class Edge(ModuleDumping, EdgeProcess)``): the child runs the same ``quayside <component>
serve`` command line through :data:`LAUNCHER`; after a graceful :meth:`stop`,
:meth:`ModuleDumping.modules` reads the set. Used by tests that keep optional features'
libraries (token verification, bcrypt, templating, policies, redis-py) out of servers whose
configuration does not use them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["LAUNCHER", "ModuleDumping", "loaded"]

# `python -m quayside`, after registering a dump of sys.modules at exit (argv[1]: the file).
LAUNCHER = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
def dump():
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
atexit.register(dump)
runpy.run_module("quayside", run_name="__main__", alter_sys=True)
"""


class ModuleDumping:
    """Mixin: run the server through :data:`LAUNCHER`; :meth:`modules` once it stopped."""

    component: str
    workdir: Path

    def command(self) -> list[str]:
        return [sys.executable, "-c", LAUNCHER, str(self.modules_file), self.component, "serve"]

    @property
    def modules_file(self) -> Path:
        return self.workdir / "modules.json"

    def modules(self) -> set[str]:
        """The modules the last run had imported when it exited. Raises FileNotFoundError
        when it did not exit through the interpreter's normal shutdown (killed)."""
        return set(json.loads(self.modules_file.read_text()))


def loaded(modules: set[str], names: set[str] | tuple[str, ...]) -> set[str]:
    """Which of ``names`` (themselves or a submodule) are in ``modules``."""
    return {n for n in names if any(m == n or m.startswith(n + ".") for m in modules)}
