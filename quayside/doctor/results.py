"""What a doctor run found: one :class:`Result` per check, and the :class:`Report` of a run.

A result is ``pass``, ``warn``, ``fail`` or ``skip`` (the check did not apply: no config for
it, or what it needs already failed), with a one-line ``detail`` (what was seen) and, unless it
passed, a one-line ``fix``. :class:`Report` orders them by group and gives the exit status:
0 when no check failed (warnings allowed), 1 otherwise. ``hints`` are client configuration
snippets generated for this setup (``daemon.json``, ``hosts.toml``, ``registries.conf``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Hint", "Report", "Result", "Status"]


class Status(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Result:
    """One check: ``group`` (``origin``, ``edge``, ``storage``...), ``name``, outcome."""

    group: str
    name: str
    status: Status
    detail: str
    fix: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, group: str, name: str, detail: str, **data: Any) -> Result:
        return cls(group, name, Status.PASS, detail, "", data)

    @classmethod
    def warn(cls, group: str, name: str, detail: str, fix: str, **data: Any) -> Result:
        return cls(group, name, Status.WARN, detail, fix, data)

    @classmethod
    def fail(cls, group: str, name: str, detail: str, fix: str, **data: Any) -> Result:
        return cls(group, name, Status.FAIL, detail, fix, data)

    @classmethod
    def skip(cls, group: str, name: str, detail: str) -> Result:
        return cls(group, name, Status.SKIP, detail)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "group": self.group,
            "check": self.name,
            "status": str(self.status),
            "detail": self.detail,
        }
        if self.fix:
            out["fix"] = self.fix
        if self.data:
            out["data"] = dict(self.data)
        return out


@dataclass(frozen=True)
class Hint:
    """A client configuration snippet: which client, which file, its text."""

    client: str
    path: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"client": self.client, "path": self.path, "text": self.text}


@dataclass
class Report:
    """Every result of one run (in the order the checks ran) and the client hints."""

    results: list[Result] = field(default_factory=list)
    hints: list[Hint] = field(default_factory=list)

    def add(self, results: Result | Iterable[Result]) -> None:
        if isinstance(results, Result):
            self.results.append(results)
        else:
            self.results.extend(results)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status is status)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status is Status.FAIL]

    @property
    def exit_code(self) -> int:
        """0 when no check failed, 1 otherwise."""
        return 1 if self.failed else 0

    def find(self, group: str, name: str) -> Result | None:
        """The first result of ``group``/``name`` (tests and scripts)."""
        return next((r for r in self.results if r.group == group and r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == 0,
            "summary": {str(s): self.count(s) for s in Status},
            "checks": [r.to_dict() for r in self.results],
            "hints": [h.to_dict() for h in self.hints],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
