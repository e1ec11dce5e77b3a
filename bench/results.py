"""Result records: raw runs per scenario and contender, summaries (median, min, max), errors.

A scenario declares its :class:`Metric` s; each repetition adds one run (a dict with a value per
metric key plus any raw detail) for a contender. :meth:`ScenarioRecord.to_dict` produces the
JSON the report and plots read::

    {"title", "description", "params", "metrics": [{key, label, unit, better}],
     "contenders": {name: {"summary": {key: {median, min, max, n, values}},
                           "runs": [...], "errors": [...]}},
     "duration_s", "error", "skipped", "conditions"}

``skipped`` is the reason a scenario could not run here (no figures are made up for it);
``conditions`` how busy the machine was meanwhile (:class:`bench.machine.CpuMeter`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

HIGHER = "higher"
LOWER = "lower"
NEUTRAL = "none"


@dataclass(frozen=True)
class Metric:
    """One figure a scenario reports; ``better`` says which direction wins (for ratios)."""

    key: str
    label: str
    unit: str
    better: str = NEUTRAL


def summarize(values: Iterable[float]) -> dict[str, Any]:
    """``{"median", "min", "max", "n", "values"}`` of the finite values (``None`` s skipped)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": vals,
    }


@dataclass
class ScenarioRecord:
    """Everything one scenario measured, per contender."""

    name: str
    title: str
    description: str
    metrics: list[Metric]
    params: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None
    skipped: str | None = None
    conditions: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # facts the report prints under the table

    def add_run(self, contender: str, run: dict[str, Any]) -> None:
        self.runs.setdefault(contender, []).append(run)

    def add_error(self, contender: str, message: str) -> None:
        self.errors.setdefault(contender, []).append(message[:2000])

    def contender_names(self) -> list[str]:
        names = list(self.runs)
        names += [n for n in self.errors if n not in self.runs]
        return names

    def summary(self, contender: str) -> dict[str, dict[str, Any]]:
        runs = self.runs.get(contender, [])
        return {m.key: summarize(r.get(m.key) for r in runs) for m in self.metrics}

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "description": self.description,
            "params": self.params,
            "metrics": [asdict(m) for m in self.metrics],
            "contenders": {
                name: {
                    "summary": self.summary(name),
                    "runs": self.runs.get(name, []),
                    "errors": self.errors.get(name, []),
                }
                for name in self.contender_names()
            },
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
            "skipped": self.skipped,
            "conditions": self.conditions,
            "notes": self.notes,
        }


def median_of(scenario: dict[str, Any] | None, contender: str, key: str) -> float | None:
    """The median of ``key`` for ``contender`` in a scenario dict (``None`` when absent)."""
    if not scenario:
        return None
    entry = scenario.get("contenders", {}).get(contender)
    if not entry:
        return None
    value = entry["summary"].get(key, {}).get("median")
    return None if value is None else float(value)
