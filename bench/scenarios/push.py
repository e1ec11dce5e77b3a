"""origin_push: skopeo pushes a large multi-layer image to the Quayside origin and to registry:2.

The image (``push_layer_sizes``: 8 incompressible layers, 1 GiB in a full run) is written once
as an OCI layout. Each repetition starts both targets fresh, with empty storage in this run's
work dir (the same disk for both), pushes the layout with ``skopeo copy oci:... docker://...``
(new port each time, so skopeo cannot mount blobs it pushed before), checks that the target
serves the manifest under its digest, then reads the target's peak RSS (VmHWM) and CPU time
(user + system, its process group) from /proc before stopping it. The order of the two
targets alternates between repetitions.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

from bench import stopping
from bench.params import Params
from bench.results import LOWER, NEUTRAL, Metric, ScenarioRecord
from bench.scenarios.context import Budget, RunContext, Scenario
from harness import skopeo
from harness.images import OCI_INDEX, OCI_MANIFEST, REF_NAME, Layer, make_image, make_layer
from harness.procs import Process
from harness.registry import DockerRegistry
from harness.servers import OriginProcess

MB = 1e6
REPO = "bench/push"
TAG = "big"
ORIGIN = "quayside-origin"
REGISTRY = "docker-registry"
CONTENDERS: dict[str, dict[str, object]] = {
    ORIGIN: {"kind": "quayside", "description": "Quayside origin (push target), fresh storage"},
    REGISTRY: {"kind": "peer", "description": "docker-registry 2.8 (push target), fresh storage"},
}

_METRICS = [
    Metric("push_s", "push time", "s", LOWER),
    Metric("peak_rss_mb", "peak RSS (VmHWM)", "MB", LOWER),
    Metric("cpu_s", "CPU time (user + sys)", "s", LOWER),
    Metric("mb_s", "image MB / push time", "MB/s", NEUTRAL),
]


def write_push_layout(root: Path, params: Params) -> tuple[str, int]:
    """Write the push image as an OCI layout under ``root`` one layer at a time (only one
    layer is ever in memory); return (manifest digest, total bytes)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    layers = []
    for i, size in enumerate(params.push_layer_sizes):
        layer = make_layer(size, seed=7_700_000 + i)
        (blobs / layer.digest.split(":", 1)[1]).write_bytes(layer.data)
        layers.append(Layer(b"", layer.digest, layer.size, layer.diff_id, layer.seed))
        del layer
    image = make_image(layers, label="bench-push")
    for digest, data in ((image.config_digest, image.config), (image.digest, image.manifest)):
        (blobs / digest.split(":", 1)[1]).write_bytes(data)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    entry = {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": image.size}
    entry["annotations"] = {REF_NAME: TAG}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    (root / "index.json").write_text(json.dumps(index))
    return image.digest, image.total_size


def _cpu_seconds(proc: Process) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in proc.group_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])
    return total / tick


def _served_digest(host: str) -> str:
    req = urllib.request.Request(
        f"http://{host}/v2/{REPO}/manifests/{TAG}", method="HEAD", headers={"Accept": OCI_MANIFEST}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(resp.headers.get("Docker-Content-Digest", ""))


def _target(name: str, workdir: Path) -> OriginProcess | DockerRegistry:
    if name == ORIGIN:
        return OriginProcess(workdir=workdir, name="origin-push")
    return DockerRegistry(workdir=workdir)


def _push_once(
    name: str, layout: Path, digest: str, size: int, workdir: Path, budget: Budget
) -> dict[str, object]:
    server = _target(name, workdir)
    try:
        server.start()
        host = server.url.split("//", 1)[1]
        start = time.monotonic()
        skopeo.push_layout(layout, TAG, host, REPO, timeout=budget.cap(900.0))
        took = time.monotonic() - start
        served = _served_digest(host)
        assert server.process is not None
        run: dict[str, object] = {
            "push_s": took,
            "mb_s": size / took / MB,
            "peak_rss_mb": server.process.peak_rss_bytes(group=True) / MB,
            "cpu_s": _cpu_seconds(server.process),
        }
        if served != digest:
            raise RuntimeError(f"{name} serves {served or 'nothing'} for the tag, not {digest}")
        return run
    finally:
        with stopping.teardown():
            server.close()
            shutil.rmtree(workdir, ignore_errors=True)


def _run(ctx: RunContext, record: ScenarioRecord, budget: Budget) -> None:
    layout = ctx.workdir / "push-layout"
    ctx.reporter.step("origin_push · writing the image layout")
    digest, size = write_push_layout(layout, ctx.params)
    record.params["image_bytes"] = size
    try:
        for rep in range(ctx.params.push_repeats):
            order = (REGISTRY, ORIGIN) if rep % 2 == 0 else (ORIGIN, REGISTRY)
            for name in order:
                budget.check()
                ctx.reporter.step(f"origin_push · {name} · run {rep + 1}/{ctx.params.push_repeats}")
                try:
                    run = _push_once(
                        name, layout, digest, size, ctx.workdir / f"push-{name}-{rep}", budget
                    )
                except (skopeo.SkopeoError, RuntimeError, OSError) as exc:
                    record.add_error(name, f"{type(exc).__name__}: {exc}")
                    run = {}
                run["rep"] = rep
                record.add_run(name, run)
                ctx.reporter.advance()
    finally:
        shutil.rmtree(layout, ignore_errors=True)


ORIGIN_PUSH = Scenario(
    name="origin_push",
    title="Push a large image: Quayside origin vs registry:2",
    description=(
        "skopeo pushes a multi-layer OCI image (incompressible layers) to a fresh Quayside "
        "origin and to a fresh docker-registry, storage on the same disk; push time, the "
        "target's peak RSS (VmHWM) and CPU time. Targets alternate order per repetition."
    ),
    metrics=lambda p: list(_METRICS),
    steps=lambda ctx: 2 * ctx.params.push_repeats,
    run=_run,
    params=lambda p: {
        "layers": len(p.push_layer_sizes),
        "image_mib": sum(p.push_layer_sizes) / 2**20,
        "repeats": p.push_repeats,
        "client": "skopeo copy oci:LAYOUT docker://...",
    },
)
