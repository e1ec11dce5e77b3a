"""``quayside doctor``: the checklist operators follow when a registry misbehaves.

Use from code::

    setup = load_setup(origin_url="https://registry.local:5000", configs=["edge.yml"],
                       environ=os.environ)
    report = await diagnose(setup)
    report.exit_code          # 0: no check failed
    report.to_json()

Modules, one per group of checks: :mod:`.setup` (what to check: URLs, configs),
:mod:`.network` (port, API, clock, health), :mod:`.tls` (served certificate),
:mod:`.storage` (writable, space, inodes), :mod:`.services` (Redis, upstreams),
:mod:`.tokens` (token keys), :mod:`.hints` (client snippets), :mod:`.runner` (the run),
:mod:`.results` (the report), :mod:`.render` (the table). The command is
:mod:`quayside.cli.doctor`.
"""

from __future__ import annotations

from quayside.doctor.results import Hint, Report, Result, Status
from quayside.doctor.runner import diagnose
from quayside.doctor.setup import Setup, load_setup
from quayside.doctor.storage import Thresholds

__all__ = [
    "Hint",
    "Report",
    "Result",
    "Setup",
    "Status",
    "Thresholds",
    "diagnose",
    "load_setup",
]
