"""Quayside, the application: the ``quayside`` command and what only the command needs.

- :mod:`quayside.cli`: the command tree (click + rich-click), one module per command group,
  loaded lazily so ``quayside --help`` imports neither server.
- :mod:`quayside.run`: ``quayside run`` (``make run``), an origin and an edge on embedded
  defaults.
- :mod:`quayside.demoimage`: a tiny OCI image layout written offline, for the first push.

The servers (``origin``, ``edge``) and the shared core (``regcore``) never import this package.
"""

from __future__ import annotations
