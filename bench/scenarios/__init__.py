"""The benchmark scenarios, by name, in the order the suite runs them."""

from __future__ import annotations

from bench.scenarios.blobs import COLD_BLOB, HERD, WARM_BLOB
from bench.scenarios.context import Budget, RunContext, Scenario, ScenarioTimeout, WanContext
from bench.scenarios.images import IMAGE_PULL
from bench.scenarios.manifests import MANIFEST_DIGEST, MANIFEST_TAG
from bench.scenarios.memory import EDGE_RSS
from bench.scenarios.push import ORIGIN_PUSH
from bench.scenarios.wan import WAN_LINK, WAN_PULL
from bench.scenarios.wanregion import WAN_CUT, WAN_REGION

ALL: dict[str, Scenario] = {
    s.name: s
    for s in (
        EDGE_RSS,
        COLD_BLOB,
        HERD,
        WARM_BLOB,
        MANIFEST_TAG,
        MANIFEST_DIGEST,
        IMAGE_PULL,
        WAN_LINK,
        WAN_PULL,
        WAN_REGION,
        WAN_CUT,
        ORIGIN_PUSH,
    )
}

__all__ = ["ALL", "Budget", "RunContext", "Scenario", "ScenarioTimeout", "WanContext"]
