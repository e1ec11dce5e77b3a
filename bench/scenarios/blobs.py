"""Blob scenarios: warm throughput, one cold client, and a thundering herd on one cold blob.

Each transfer is checked: status 2xx and exactly the blob's size in bytes, else the run is
recorded as an error for that contender and left out of the figures. Cold figures use a
distinct blob per repetition (cold for every contender, since each has its own cache); the
upstream's access log, read from a mark taken just before the request, says how many GETs of
that blob and how many bytes the upstream served for it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import time

from bench import stopping
from bench.dataset import BlobRef
from bench.loadjob import JobResult
from bench.params import MiB, Params
from bench.relayfloor import relay_floor
from bench.results import HIGHER, LOWER, Metric, ScenarioRecord
from bench.scenarios.context import Budget, RunContext, Scenario
from bench.topologies import Contender
from bench.upstreamlog import UpstreamLog
from harness.registry import DockerRegistry

MB = 1e6


def _failures(result: JobResult, blob: BlobRef) -> list[str]:
    bad = [c for c in result.clients if not c.ok or c.bytes != blob.size]
    return [f"{c.url}: status {c.status}, {c.bytes}/{blob.size} B {c.error}".strip() for c in bad]


def warm_up(ctx: RunContext, contender: Contender, blob: BlobRef, budget: Budget) -> None:
    """Fetch ``blob`` through every node until it is cached; the first fetch is digest-checked.

    Raises:
        RuntimeError: a fetch failed or the bytes did not match the digest.
    """
    for i in range(len(contender.nodes)):
        url = contender.blob_url(blob.repo, blob.digest, i)
        for attempt in range(2):
            res = ctx.fetch([url], budget, verify=blob.digest if attempt == 0 else None)
            failures = _failures(res, blob)
            if failures:
                raise RuntimeError(f"warm-up failed: {failures[0]}")
            if attempt == 0 and not res.clients[0].digest_ok:
                raise RuntimeError(f"warm-up: {url} served bytes that do not match {blob.digest}")


# -- warm_blob ---------------------------------------------------------------------------------


def _warm_metrics(p: Params) -> list[Metric]:
    return [
        Metric(f"mb_s_c{n}", f"MB/s, {n} client{'s' if n > 1 else ''}", "MB/s", HIGHER)
        for n in p.warm_clients
    ]


def _warm_steps(ctx: RunContext) -> int:
    return len(ctx.contenders_for("warm_blob")) * (ctx.params.warm_repeats + 1)


def _warm_run(ctx: RunContext, record: ScenarioRecord, budget: Budget) -> None:
    blob = ctx.dataset.warm
    ctx.topology.add_static_blob(blob.digest)
    ready: list[Contender] = []
    for contender in ctx.contenders_for("warm_blob"):
        ctx.reporter.step(f"warm_blob · {contender.name} · warm-up")
        try:
            warm_up(ctx, contender, blob, budget)
            ready.append(contender)
        except RuntimeError as exc:
            record.add_error(contender.name, str(exc))
        ctx.reporter.advance()
    repeats = ctx.params.warm_repeats
    for rep in range(repeats):
        order = rotated(ready, rep)
        runs: dict[str, dict[str, object]] = {c.name: {"rep": rep} for c in order}
        if 1 in ctx.params.warm_clients:  # interleaved: a slow moment hits every contender
            singles: dict[str, list[JobResult]] = {c.name: [] for c in order}
            for _ in range(ctx.params.warm_single_rounds):
                for contender in order:
                    budget.check()
                    runs[contender.name]["settle_s_c1"] = ctx.quiesce(budget)["settle_s"]
                    singles[contender.name].append(
                        ctx.fetch(ctx.spread(contender, blob, 1), budget)
                    )
            for contender in order:
                _record_warm(
                    record, runs[contender.name], contender, blob, 1, singles[contender.name]
                )
        for contender in order:
            budget.check()
            ctx.reporter.step(f"warm_blob · {contender.name} · run {rep + 1}/{repeats}")
            run = runs[contender.name]
            for n in ctx.params.warm_clients:
                if n == 1:
                    continue
                run[f"settle_s_c{n}"] = ctx.quiesce(budget)["settle_s"]
                res = ctx.fetch(ctx.spread(contender, blob, n), budget)
                _record_warm(record, run, contender, blob, n, [res])
            record.add_run(contender.name, run)
            ctx.reporter.advance()


def _record_warm(
    record: ScenarioRecord,
    run: dict[str, object],
    contender: Contender,
    blob: BlobRef,
    n: int,
    results: list[JobResult],
) -> None:
    """``n``-client figures of one repetition: all bytes over all wall time of ``results``
    (one download round each); a failed round is recorded as the contender's error."""
    for res in results:
        failures = _failures(res, blob)
        if failures:
            record.add_error(contender.name, f"{n} clients: {failures[0]}")
            return
    wall = sum(res.wall for res in results)
    run[f"mb_s_c{n}"] = sum(res.total_bytes for res in results) / wall / MB
    run[f"wall_s_c{n}"] = wall / len(results)
    run[f"client_max_s_c{n}"] = max(c.total for res in results for c in res.clients)


WARM_BLOB = Scenario(
    name="warm_blob",
    title="Warm blob throughput",
    description=(
        "A blob already cached by the contender, downloaded by 1 and by 16 concurrent streaming "
        "clients (separate load-generator process; bytes counted and discarded). "
        "MB/s = all bytes / wall time (MB = 10^6 B); one client's figure per repetition "
        "covers several downloads, taken in turn with the other contenders' (a single 200 MiB "
        "download lasts 50-80 ms here and swings ±40%). Before each download the bench waits "
        "until every server it started is idle (the previous step's 16 connections are "
        "closed and freed), and each repetition starts one contender further along."
    ),
    metrics=_warm_metrics,
    steps=_warm_steps,
    run=_warm_run,
    params=lambda p: {
        "blob_size": p.warm_blob_size,
        "clients": list(p.warm_clients),
        "repeats": p.warm_repeats,
        "single_rounds": p.warm_single_rounds,
    },
)


# -- cold_blob ---------------------------------------------------------------------------------

_COLD_METRICS = [
    Metric("ttfb_s", "time to first body byte", "s", LOWER),
    Metric("total_s", "total time", "s", LOWER),
    Metric("upstream_gets", "upstream GETs of the blob", "", LOWER),
    Metric("upstream_mb", "upstream MB for the blob", "MB", LOWER),
    Metric("cpu_s_per_gib", "contender CPU (user+sys) per GiB", "s", LOWER),
    Metric("cpu_vs_sha256", "contender CPU / SHA-256 time, same bytes", "x", LOWER),
    Metric("cpu_vs_floor", "contender CPU / verifying relay floor, same bytes", "x", LOWER),
]


def cpu_seconds(contender: Contender) -> float:
    """User + system CPU seconds used so far by the contender's serving processes (all
    threads, and the whole process group for nginx; from ``/proc/<pid>/stat``, fields 14-15).
    Dead processes count 0."""
    total = 0
    for proc in contender.processes():
        pids = proc.group_pids() if contender.group_memory else [proc.pid]
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def sha256_seconds_per_gib(sample: int = 64 << 20) -> float:
    """CPU seconds ``hashlib.sha256`` needs per GiB on this machine (best of 3 on ``sample``)."""
    data = os.urandom(sample)
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        hashlib.sha256(data).digest()
        best = min(best, time.process_time() - start)
    return best * (1 << 30) / sample


def rotated(contenders: list[Contender], rep: int) -> list[Contender]:
    """The contenders in turn order for repetition ``rep``: each repetition starts one
    further along, so no contender always runs right after the same other one."""
    if not contenders:
        return []
    k = rep % len(contenders)
    return contenders[k:] + contenders[:k]


def _cold_steps(ctx: RunContext) -> int:
    return len(ctx.contenders_for("cold_blob")) * ctx.params.repeats


def count_upstream(
    ctx: RunContext, record: ScenarioRecord, logs: dict[str, UpstreamLog], budget: Budget
) -> None:
    """After a scenario: per run, the upstream GETs of its ``digest`` and their bytes (and
    ``amplification`` = bytes / ``size``), from each contender's own upstream log."""
    ctx.settle_upstreams(logs, budget)
    for name, log in logs.items():
        records = log.records()
        for run in record.runs.get(name, []):
            served = log.served(str(run["digest"]), records=records)
            run["upstream_gets"] = served.gets
            run["upstream_mb"] = served.get_bytes / MB
            run["amplification"] = served.get_bytes / int(run["size"])


def _cold_run(ctx: RunContext, record: ScenarioRecord, budget: Budget) -> None:
    contenders = ctx.contenders_for("cold_blob")
    logs = ctx.mark_upstreams(contenders)
    sha_per_gib = sha256_seconds_per_gib()
    floors = ctx.workdir / "cold-floor"
    floors.mkdir(parents=True, exist_ok=True)
    assert ctx.topology.registry is not None
    # the floor's own view of the upstream storage: its GETs stay out of every contender's log
    view = DockerRegistry(ctx.topology.registry.root, workdir=ctx.workdir / "upstream-floor")
    try:
        view.start()
        for rep, blob in enumerate(ctx.dataset.cold[: ctx.params.repeats]):
            budget.check()
            ctx.quiesce(budget)
            floor = relay_floor(view.url, blob.repo, blob.digest, floors)
            unhashed = relay_floor(view.url, blob.repo, blob.digest, floors, verify=False)
            floors_per_gib = (floor.seconds_per_gib, unhashed.seconds_per_gib)
            _cold_rep(ctx, record, budget, rep, blob, sha_per_gib, floors_per_gib)
    finally:
        with stopping.teardown():
            view.close()
            shutil.rmtree(floors, ignore_errors=True)
    count_upstream(ctx, record, logs, budget)


def _cold_rep(
    ctx: RunContext,
    record: ScenarioRecord,
    budget: Budget,
    rep: int,
    blob: BlobRef,
    sha_per_gib: float,
    floors_per_gib: tuple[float, float],
) -> None:
    """One repetition; ``floors_per_gib``: the verifying relay floor, and the same relay
    without hashing (CPU seconds per GiB)."""
    floor_per_gib, unhashed_per_gib = floors_per_gib
    contenders = ctx.contenders_for("cold_blob")
    for contender in rotated(contenders, rep):
        budget.check()
        ctx.reporter.step(f"cold_blob · {contender.name} · run {rep + 1}/{ctx.params.repeats}")
        settle = ctx.quiesce(budget)
        cpu_before = cpu_seconds(contender)
        res = ctx.fetch([contender.blob_url(blob.repo, blob.digest, 0)], budget)
        cpu = cpu_seconds(contender) - cpu_before
        client = res.clients[0]
        failures = _failures(res, blob)
        run: dict[str, object] = {"rep": rep, "digest": blob.digest, "size": blob.size}
        run.update(settle)
        if failures:
            record.add_error(contender.name, failures[0])
        else:
            run.update(ttfb_s=client.ttfb, total_s=client.total, headers_s=client.t_headers)
            per_gib = cpu * (1 << 30) / blob.size
            run.update(cpu_s=cpu, cpu_s_per_gib=per_gib, cpu_vs_sha256=per_gib / sha_per_gib)
            run.update(
                sha256_s_per_gib=sha_per_gib,
                floor_s_per_gib=floor_per_gib,
                floor_unhashed_s_per_gib=unhashed_per_gib,
                cpu_vs_floor=per_gib / floor_per_gib,
            )
        record.add_run(contender.name, run)
        ctx.reporter.advance()


COLD_BLOB = Scenario(
    name="cold_blob",
    title="Cold blob, one client",
    description=(
        "One client asks for a blob the contender has never seen (a fresh blob per repetition). "
        "Time to first body byte, total time, and what the upstream served for that blob "
        "(from its access log). CPU = user+sys of the contender's serving processes (from "
        "/proc/<pid>/stat) during the request, per GiB of blob, and over what hashlib.sha256 "
        "needs for as many bytes on this machine (for the direct contender: the upstream's own), "
        "and over the verifying relay floor measured before each repetition on the same blob: "
        "one thread that receives it from the upstream, hashes it, writes it with O_DIRECT and "
        "sends it to a loopback client, each byte once, with no event loop or hand-offs "
        "(bench/relayfloor.py; no verifying cache can use less here), and once more without "
        "the hash: what receiving, writing and sending cost alone. Before each request the "
        "bench waits until every server it started is idle (the reference proxy fetches its "
        "second copy after answering), and each repetition starts one contender further along."
    ),
    metrics=lambda p: list(_COLD_METRICS),
    steps=_cold_steps,
    run=_cold_run,
    params=lambda p: {"blob_size": p.cold_blob_size, "repeats": p.repeats},
)


# -- herd ----------------------------------------------------------------------------------------

_HERD_METRICS = [
    Metric("wall_s", "wall time", "s", LOWER),
    Metric("client_median_s", "per-client time, median", "s", LOWER),
    Metric("client_max_s", "per-client time, max", "s", LOWER),
    Metric("ttfb_median_s", "first body byte, median", "s", LOWER),
    Metric("upstream_gets", "upstream GETs of the blob", "", LOWER),
    Metric("amplification", "upstream bytes / blob size", "x", LOWER),
]


def _herd_steps(ctx: RunContext) -> int:
    return len(ctx.contenders_for("herd")) * ctx.params.herd_repeats


def _herd_run(ctx: RunContext, record: ScenarioRecord, budget: Budget) -> None:
    contenders = ctx.contenders_for("herd")
    logs = ctx.mark_upstreams(contenders)
    n = ctx.params.herd_clients
    for rep, blob in enumerate(ctx.dataset.herd[: ctx.params.herd_repeats]):
        for contender in rotated(contenders, rep):
            budget.check()
            ctx.reporter.step(
                f"herd · {contender.name} · {n} clients · run {rep + 1}/{ctx.params.herd_repeats}"
            )
            settle = ctx.quiesce(budget)
            res = ctx.fetch(ctx.spread(contender, blob, n), budget)
            failures = _failures(res, blob)
            run: dict[str, object] = {
                "rep": rep,
                "digest": blob.digest,
                "size": blob.size,
                "failed_clients": len(failures),
                **settle,
            }
            if failures:
                record.add_error(
                    contender.name, f"{len(failures)}/{n} clients failed: {failures[0]}"
                )
            else:
                totals = sorted(c.total for c in res.clients)
                run.update(
                    wall_s=res.wall,
                    client_median_s=statistics.median(totals),
                    client_p90_s=totals[int(0.9 * (len(totals) - 1))],
                    client_max_s=totals[-1],
                    ttfb_median_s=statistics.median(c.ttfb for c in res.clients),
                    client_totals_s=[round(t, 4) for t in totals],
                )
            record.add_run(contender.name, run)
            ctx.reporter.advance()
    count_upstream(ctx, record, logs, budget)


HERD = Scenario(
    name="herd",
    title="Thundering herd on one cold blob",
    description=(
        "N clients at once ask for the same blob the contender has never seen (multi-node "
        "contenders: clients round-robin over the nodes). Amplification = upstream bytes served "
        "for that blob / blob size (1.0 = one upstream fetch)."
    ),
    metrics=lambda p: list(_HERD_METRICS),
    steps=_herd_steps,
    run=_herd_run,
    params=lambda p: {
        "blob_size": p.herd_blob_size,
        "clients": p.herd_clients,
        "repeats": p.herd_repeats,
        "blob_mib": p.herd_blob_size / MiB,
    },
)
