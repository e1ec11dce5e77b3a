"""image_pull: a whole image (config + several layers) with skopeo, cold then warm.

Each repetition pulls a distinct image (cold for every contender) into a fresh ``oci:``
directory, then pulls it again into another fresh directory (warm: skopeo skips nothing, the
contender's cache answers). Contenders in front of docker-registry also report the upstream
GETs of the image's blobs during the cold pull. The Quayside origin is the second upstream
(``origin`` served directly and ``quayside-1-origin`` in front of it).
"""

from __future__ import annotations

import shutil
import time

from bench.params import Params
from bench.results import LOWER, Metric, ScenarioRecord
from bench.scenarios.context import Budget, RunContext, Scenario
from harness import skopeo

MB = 1e6

_METRICS = [
    Metric("cold_s", "cold pull", "s", LOWER),
    Metric("warm_s", "warm pull", "s", LOWER),
    Metric("upstream_blob_gets", "upstream blob GETs, cold + warm pull", "", LOWER),
]


def _steps(ctx: RunContext) -> int:
    return len(ctx.contenders_for("image_pull")) * ctx.params.image_repeats


def _run(ctx: RunContext, record: ScenarioRecord, budget: Budget) -> None:
    contenders = ctx.contenders_for("image_pull")
    logs = ctx.mark_upstreams(contenders)
    base = ctx.workdir / "pulls"
    for rep, image in enumerate(ctx.dataset.images[: ctx.params.image_repeats]):
        for contender in contenders:
            budget.check()
            ctx.reporter.step(
                f"image_pull · {contender.name} · run {rep + 1}/{ctx.params.image_repeats}"
            )
            run: dict[str, object] = {"rep": rep, "image": image.digest}
            try:
                for phase in ("cold", "warm"):
                    target = base / f"{contender.name}-{rep}-{phase}"
                    start = time.monotonic()
                    skopeo.pull_to_layout(
                        contender.host(0),
                        image.repo,
                        image.tag,
                        target,
                        timeout=budget.cap(300.0),
                    )
                    run[f"{phase}_s"] = time.monotonic() - start
                    shutil.rmtree(target, ignore_errors=True)
            except skopeo.SkopeoError as exc:
                record.add_error(contender.name, str(exc))
                run.pop("cold_s", None)
                run.pop("warm_s", None)
            record.add_run(contender.name, run)
            ctx.reporter.advance()
    ctx.settle_upstreams(logs, budget)
    for name, log in logs.items():
        records = log.records()
        for run in record.runs.get(name, []):
            pulled = ctx.dataset.images[int(str(run["rep"]))]
            run["upstream_blob_gets"] = log.served(*pulled.blob_digests, records=records).gets


def _params(p: Params) -> dict[str, object]:
    return {
        "layers": len(p.image_layer_sizes),
        "layer_sizes": list(p.image_layer_sizes),
        "image_mb": sum(p.image_layer_sizes) / MB,
        "repeats": p.image_repeats,
        "client": "skopeo copy docker://... oci:FRESH_DIR",
    }


IMAGE_PULL = Scenario(
    name="image_pull",
    title="Whole image pull with skopeo",
    description=(
        "skopeo copies a multi-layer image into a fresh oci: directory through the contender: "
        "cold (a new image per repetition) then warm. Upstream blob GETs count both pulls "
        "(5 blobs each: config + 4 layers; a cache should fetch each once)."
    ),
    metrics=lambda p: list(_METRICS),
    steps=_steps,
    run=_run,
    params=_params,
)
