"""WAN scenarios, part 2: a region of clients on one cold image, and a cut mid-blob.

- ``wan_region``: ``wan_region_edges`` x ``wan_region_clients_per_edge`` clients (round-robin
  over the contender's nodes) pull the same cold image at once: each client GETs the manifest by
  tag (with the clients' ``Accept``), then every blob in parallel, like skopeo does; bodies are
  counted, the first client of each node digest-checks them. Bytes over the link (one copy of
  the image is the goal) come from the link's counters. Peers fetch once per client across the
  WAN, which takes minutes per repetition: they run ``wan_peer_repeats`` times and each
  repetition is stopped after ``wan_peer_cap`` s; their link figure is then a lower bound and
  ``clients_done`` says how many had finished.
- ``wan_cut``: ``wan_cut_clients`` clients GET one cold blob while the relay resets the
  upstream connection that carries it after ``wan_cut_fraction`` of its bytes. Every client must
  still get every byte (digest-checked); ``max_gap_s`` is the longest pause any client saw
  between two body reads (a waiter that stalls shows here); the upstream's access log says
  how many GETs (and ranged GETs, 206) it served for the blob.
"""

from __future__ import annotations

import math
import time

from bench.dataset import MANIFEST_ACCEPT, ImageRef
from bench.loadjob import FetchJob, JobResult
from bench.results import HIGHER, LOWER, NEUTRAL, Metric, ScenarioRecord
from bench.scenarios.context import Budget, RunContext, Scenario, WanContext
from bench.scenarios.wan import wan
from bench.topologies import KIND_QUAYSIDE, Contender
from bench.upstreamlog import UpstreamLog

REGION_CONTENDERS = ("reference-proxy", "nginx-cache", "quayside-3")
CUT_CONTENDERS = ("direct", "reference-proxy", "nginx-cache", "quayside-1", "quayside-3")


def _nearest_rank(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def _plan(ctx: RunContext, scenario: str, names: tuple[str, ...]) -> list[tuple[Contender, int]]:
    """The contenders of ``scenario`` with their repetitions (Quayside: all, peers: fewer)."""
    p = ctx.params
    out = []
    for c in ctx.contenders_for(scenario):
        if c.name in names:
            out.append((c, p.wan_repeats if c.kind == KIND_QUAYSIDE else p.wan_peer_repeats))
    return out


# -- wan_region ------------------------------------------------------------------------------------

_REGION_METRICS = [
    Metric("link_copies", "link payload / image size", "x", LOWER),
    Metric("p50_s", "pull time p50", "s", LOWER),
    Metric("p99_s", "pull time p99", "s", LOWER),
    Metric("clients_done", "clients done", "", HIGHER),
    Metric("wall_s", "all clients done", "s", LOWER),
]


def _region_rep(
    w: WanContext,
    contender: Contender,
    image: ImageRef,
    cap: float | None,
    budget: Budget,
) -> dict[str, object]:
    p = w.params
    before = w.counters(contender.name, budget)
    n = p.wan_region_edges * p.wan_region_clients_per_edge
    verified = len(contender.nodes) * p.wan_region_verify_clients
    start = time.monotonic()
    limit = min(cap or 600.0, budget.remaining() - 15)
    manifests = w.loadgen.run(
        FetchJob(
            urls=tuple(contender.manifest_url(image.repo, image.tag, i) for i in range(n)),
            headers=(("Accept", MANIFEST_ACCEPT),),
            timeout=budget.cap(min(limit, 60.0)),
        )
    )
    urls, digests = [], []
    for i in range(n):
        for digest in image.blob_digests:
            urls.append(contender.blob_url(image.repo, digest, i))
            digests.append(digest if i < verified else "")
    left = max(1.0, limit - (time.monotonic() - start))
    blobs = w.loadgen.run(FetchJob(urls=tuple(urls), timeout=left, digests=tuple(digests)))
    after = w.counters(contender.name, budget, timeout=60.0)  # a capped peer's copies end here
    per = len(image.blob_digests)
    times, done, errors = [], 0, []
    for i in range(n):
        mine = blobs.clients[i * per : (i + 1) * per]
        bad = [
            f"{c.url}: status {c.status}, {c.bytes}/{size} B {c.error}".strip()
            for c, size in zip(mine, image.blob_sizes, strict=True)
            if not c.ok or c.bytes != size or c.digest_ok is False
        ]
        m = manifests.clients[i]
        if not m.ok:
            bad.insert(0, f"manifest {m.url}: status {m.status} {m.error}".strip())
        if bad:
            errors.append(bad[0])
            continue
        done += 1
        times.append(m.total + max(c.total for c in mine))
    run: dict[str, object] = {
        "clients": n,
        "clients_done": done,
        "link_copies": (after - before).payload_down() / image.total_size,
        "link": (after - before).to_dict(),
        "capped": cap is not None and done < n,
        "cap_s": cap,
        "first_error": errors[0] if errors else "",
    }
    if times:
        run.update(
            p50_s=_nearest_rank(times, 0.5),
            p99_s=_nearest_rank(times, 0.99),
            pull_times_s=[round(t, 3) for t in sorted(times)],
        )
    if done == n:
        run["wall_s"] = manifests.wall + blobs.wall
    return run


def _region_run(ctx: RunContext, record: ScenarioRecord, budget: Budget) -> None:
    w = wan(ctx)
    for contender, reps in _plan(ctx, "wan_region", REGION_CONTENDERS):
        cap = ctx.params.wan_peer_cap if contender.kind != KIND_QUAYSIDE else None
        for rep in range(reps):
            budget.check()
            ctx.reporter.step(f"wan_region · {contender.name} · run {rep + 1}/{reps}")
            image = w.wan.region[rep]
            run = _region_rep(w, contender, image, cap, budget)
            run.update(rep=rep, image=image.digest)
            if run["clients_done"] != run["clients"] and not run["capped"]:
                record.add_error(contender.name, f"{run['first_error']}")
            record.add_run(contender.name, run)
            ctx.reporter.advance()
    if any(r.get("capped") for runs in record.runs.values() for r in runs):
        record.notes.append(
            f"peers stopped after {ctx.params.wan_peer_cap:g} s (they fetch once per client "
            "across the WAN; a whole repetition would take minutes): their link figures (bytes "
            "until the link went quiet after their clients were stopped) are lower bounds, "
            "and clients_done counts who had finished by the stop"
        )


WAN_REGION = Scenario(
    name="wan_region",
    title="A region pulls one cold image across the WAN",
    description=(
        "Edges x clients per edge pull the same cold image at once (manifest by tag with the "
        "clients' Accept, then all blobs in parallel), round-robin over the contender's nodes. "
        "Link payload / image size from the link's own counters (1.0 = one copy crossed the "
        "WAN); pull time = manifest + slowest blob per client."
    ),
    metrics=lambda p: list(_REGION_METRICS),
    steps=lambda ctx: sum(r for _c, r in _plan(ctx, "wan_region", REGION_CONTENDERS)),
    run=_region_run,
    params=lambda p: {
        "edges": p.wan_region_edges,
        "clients_per_edge": p.wan_region_clients_per_edge,
        "image_mib": sum(p.wan_layer_sizes) / 2**20,
        "repeats": p.wan_repeats,
        "peer_repeats": p.wan_peer_repeats,
        "peer_cap_s": p.wan_peer_cap,
    },
)


# -- wan_cut ---------------------------------------------------------------------------------------

_CUT_METRICS = [
    Metric("clients_ok", "clients with every byte right", "", HIGHER),
    Metric("max_gap_s", "longest pause in a client's body", "s", LOWER),
    Metric("wall_s", "all clients done", "s", LOWER),
    Metric("link_ratio", "link payload / blob size", "x", LOWER),
    Metric("range_gets", "ranged upstream GETs (206)", "", NEUTRAL),
]


def _cut_run(ctx: RunContext, record: ScenarioRecord, budget: Budget) -> None:
    w = wan(ctx)
    n = ctx.params.wan_cut_clients
    log = UpstreamLog(w.upstream.log_path)
    for contender, reps in _plan(ctx, "wan_cut", CUT_CONTENDERS):
        for rep in range(reps):
            budget.check()
            ctx.reporter.step(f"wan_cut · {contender.name} · run {rep + 1}/{reps}")
            blob = w.wan.cut[rep]
            relay = w.relays[contender.name]
            mark = w.counters(contender.name, budget)
            log.settle(0.2, timeout=5.0)
            log.mark()
            cuts = len(relay.events("cut"))
            relay.arm_cut(int(blob.size * ctx.params.wan_cut_fraction))
            res: JobResult = w.loadgen.run(
                FetchJob(
                    urls=tuple(ctx.spread(contender, blob, n)),
                    timeout=budget.cap(300.0),
                    digests=(blob.digest,) * n,
                )
            )
            relay.arm_cut(-1)
            after = w.counters(contender.name, budget, timeout=60.0)
            log.settle(ctx.params.log_quiet, timeout=5.0)
            records = [r for r in log.records() if r.method == "GET" and blob.digest in r.path]
            good = [c for c in res.clients if c.ok and c.bytes == blob.size and c.digest_ok]
            run: dict[str, object] = {
                "rep": rep,
                "digest": blob.digest,
                "clients": n,
                "clients_ok": len(good),
                "max_gap_s": max(c.max_gap for c in res.clients),
                "link_ratio": (after - mark).payload_down() / blob.size,
                "cuts": len(relay.events("cut")) - cuts,
                "upstream_gets": len(records),
                "range_gets": sum(1 for r in records if r.status == 206),
            }
            if len(good) == n:
                run["wall_s"] = res.wall
            bad = [c for c in res.clients if c not in good]
            if bad:
                c = bad[0]
                run["first_error"] = f"status {c.status}, {c.bytes}/{blob.size} B {c.error}"
                if contender.kind == KIND_QUAYSIDE:
                    record.add_error(
                        contender.name, f"{len(bad)}/{n} clients: {run['first_error']}"
                    )
            if run["cuts"] != 1:
                record.add_error(contender.name, f"the relay cut {run['cuts']} connections, not 1")
            record.add_run(contender.name, run)
            ctx.reporter.advance()


WAN_CUT = Scenario(
    name="wan_cut",
    title="Upstream connection cut mid-blob on the WAN",
    description=(
        "Clients GET one cold blob while the relay resets the upstream connection carrying it "
        "part-way through. Clients with every byte right (digest-checked), the longest pause "
        "any client saw in its body, link payload / blob size, and the upstream GETs (ranged: "
        "status 206) from the upstream's access log. direct and the peers are shown for what "
        "a client of theirs gets; they run fewer repetitions."
    ),
    metrics=lambda p: list(_CUT_METRICS),
    steps=lambda ctx: sum(r for _c, r in _plan(ctx, "wan_cut", CUT_CONTENDERS)),
    run=_cut_run,
    params=lambda p: {
        "blob_size": p.wan_cut_blob_size,
        "clients": p.wan_cut_clients,
        "cut_after_fraction": p.wan_cut_fraction,
        "repeats": p.wan_repeats,
        "peer_repeats": p.wan_peer_repeats,
    },
)
