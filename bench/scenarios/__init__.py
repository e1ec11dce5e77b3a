"""The benchmark scenarios, by name, in the order the suite runs them."""

from __future__ import annotations

from bench.scenarios.blobs import COLD_BLOB, HERD, WARM_BLOB
from bench.scenarios.context import Budget, RunContext, Scenario, ScenarioTimeout
from bench.scenarios.images import IMAGE_PULL
from bench.scenarios.manifests import MANIFEST_DIGEST, MANIFEST_TAG
from bench.scenarios.memory import EDGE_RSS

ALL: dict[str, Scenario] = {
    s.name: s
    for s in (EDGE_RSS, COLD_BLOB, HERD, WARM_BLOB, MANIFEST_TAG, MANIFEST_DIGEST, IMAGE_PULL)
}

__all__ = ["ALL", "Budget", "RunContext", "Scenario", "ScenarioTimeout"]
