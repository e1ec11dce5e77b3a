"""Where the access-control files of an origin live, for the ``quayside`` commands.

The commands must work before the origin has ever started (the first ``quayside users add``
creates the htpasswd file the config names), so :func:`auth_paths` reads the config file's
YAML *without* validating it: ``auth.htpasswd.path`` (or ``quayside.auth.tokenservice.users``),
``quayside.auth.robots.path`` and ``quayside.audit.path``, each defaulting under
``<root>/quayside/`` where ``root`` is ``--root``, else ``storage.filesystem.rootdirectory``,
else ``./data/origin``. ``REGISTRY_AUTH_HTPASSWD_PATH`` and
``REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY`` apply as they do for the server.

:func:`parse_age` reads ``30d``, ``12h``, ``2w``, ``90m`` (and Go durations) as seconds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from regcore.sizes import parse_duration

__all__ = ["AuthPaths", "auth_paths", "parse_age"]


@dataclass(frozen=True)
class AuthPaths:
    root: Path
    htpasswd: Path | None
    robots: Path
    audit: Path


def _get(doc: Any, dotted: str) -> Any:
    node = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def auth_paths(
    config: str | None, root: str | None, environ: Mapping[str, str] = os.environ
) -> AuthPaths:
    """The files (see the module docstring). Raises OSError/yaml.YAMLError for an unreadable
    config file."""
    doc: Any = {}
    if config:
        with open(config, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
    base = Path(
        root
        or environ.get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY")
        or _get(doc, "storage.filesystem.rootdirectory")
        or "./data/origin"
    )
    htpasswd = (
        environ.get("REGISTRY_AUTH_HTPASSWD_PATH")
        or _get(doc, "auth.htpasswd.path")
        or _get(doc, "quayside.auth.tokenservice.users")
    )
    robots = _get(doc, "quayside.auth.robots.path") or base / "quayside" / "robots.json"
    audit = _get(doc, "quayside.audit.path") or base / "quayside" / "audit.log"
    return AuthPaths(
        root=base,
        htpasswd=Path(os.path.expanduser(str(htpasswd))) if htpasswd else None,
        robots=Path(os.path.expanduser(str(robots))),
        audit=Path(os.path.expanduser(str(audit))),
    )


_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([dw])\s*")


def parse_age(text: str) -> float:
    """Seconds in ``30d``/``2w`` or a Go duration (``12h``, ``90m``). Raises ValueError."""
    m = _AGE.fullmatch(text)
    if m:
        return float(m.group(1)) * (86400 if m.group(2) == "d" else 7 * 86400)
    return parse_duration(text)
