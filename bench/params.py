"""Benchmark parameters: the full suite and the ``--quick`` one, as frozen dataclasses.

Every size, count, duration and timeout the suite uses lives here, so ``results.json`` can
record exactly what was run (:meth:`Params.to_dict`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MiB = 1024 * 1024

SCENARIOS: tuple[str, ...] = (
    "edge_rss",  # first: VmHWM of a fresh process is only meaningful before anything else ran
    "cold_blob",
    "herd",
    "warm_blob",
    "manifest_tag",
    "manifest_digest",
    "image_pull",
)

CONTENDERS: tuple[str, ...] = (
    "direct",
    "nginx-static",
    "reference-proxy",
    "nginx-cache",
    "quayside-1",
    "quayside-3",
    "origin",
    "quayside-1-origin",
)


@dataclass(frozen=True)
class Params:
    """What one run does. Sizes in bytes, durations and timeouts in seconds."""

    mode: str
    repeats: int
    warm_blob_size: int
    warm_clients: tuple[int, ...]
    warm_repeats: int
    cold_blob_size: int
    herd_blob_size: int
    herd_clients: int
    herd_repeats: int
    manifest_duration: float
    manifest_connections: int
    manifest_repeats: int
    image_layer_sizes: tuple[int, ...]
    image_repeats: int
    rss_clients: int
    rss_blob_size: int
    scenario_timeout: float
    edge_cache_size: str = "16GiB"
    log_quiet: float = 0.25  # access log must be still this long before it is counted
    scenarios: tuple[str, ...] = SCENARIOS
    contenders: tuple[str, ...] = CONTENDERS
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def full(cls) -> Params:
        return cls(
            mode="full",
            repeats=3,
            warm_blob_size=200 * MiB,
            warm_clients=(1, 16),
            warm_repeats=5,
            cold_blob_size=200 * MiB,
            herd_blob_size=64 * MiB,
            herd_clients=50,
            herd_repeats=3,
            manifest_duration=5.0,
            manifest_connections=16,
            manifest_repeats=3,
            image_layer_sizes=(40 * MiB, 30 * MiB, 20 * MiB, 10 * MiB),
            image_repeats=3,
            rss_clients=16,
            rss_blob_size=200 * MiB,
            scenario_timeout=900.0,
        )

    @classmethod
    def quick(cls) -> Params:
        return cls(
            mode="quick",
            repeats=3,
            warm_blob_size=32 * MiB,
            warm_clients=(1, 16),
            warm_repeats=3,
            cold_blob_size=32 * MiB,
            herd_blob_size=8 * MiB,
            herd_clients=20,
            herd_repeats=2,
            manifest_duration=1.0,
            manifest_connections=16,
            manifest_repeats=2,
            image_layer_sizes=(8 * MiB, 6 * MiB, 4 * MiB, 2 * MiB),
            image_repeats=2,
            rss_clients=16,
            rss_blob_size=32 * MiB,
            scenario_timeout=60.0,
            edge_cache_size="4GiB",
        )

    def with_overrides(self, **changes: Any) -> Params:
        """A copy with the non-``None`` ``changes`` applied."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["image_total_size"] = sum(self.image_layer_sizes)
        return out
