"""Streaming blob clients in separate worker processes, so they never share a GIL with a server.

A :class:`FetchJob` is a list of URLs, one per client; every client GETs its URL once, counts
the bytes (and discards them, or hashes them when ``verify_digest`` or ``digests`` ask) and
records its time to first byte, total time and longest pause between body reads. The clients
of a job run concurrently in one asyncio loop (uvloop when available) per worker process; a job
can be split over several workers that all start at the same ``CLOCK_MONOTONIC`` instant
(system-wide on Linux, so comparable across processes); results come back in URL order.

Guarantees:
- every request is bounded by ``FetchJob.timeout``; :meth:`LoadGenerator.run` by that plus a
  grace period, after which the workers are replaced and :class:`LoadTimeout` is raised;
- workers are daemon processes started with ``spawn`` (no inherited loops or sockets),
  terminated by :meth:`LoadGenerator.close` (also on ``with`` exit).

This module is the driver; the job and result records are in :mod:`bench.loadjob`, the worker
process and its HTTP client in :mod:`bench.loadworker`.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from bench.loadjob import ClientResult, FetchJob, JobResult
from bench.loadworker import worker_main

_START_SLACK = 0.15  # seconds between dispatch and the synchronized start
_READY_TIMEOUT = 60.0  # seconds a new worker may take to import and report ready


class LoadTimeout(TimeoutError):
    """A job did not finish within its timeout; its workers were killed and replaced."""


class LoadGenerator:
    """A pool of ``processes`` persistent worker processes running :class:`FetchJob` s."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = max(1, processes)
        self._ctx = mp.get_context("spawn")
        self._workers: list[tuple[Any, Connection]] = []

    def start(self) -> LoadGenerator:
        """Start the missing workers and wait until each is ready (at most 60 s).

        Raises:
            LoadTimeout: a worker did not report ready in time (it is stopped).
        """
        new = []
        while len(self._workers) < self.processes:
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(target=worker_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self._workers.append((proc, parent))
            new.append(parent)
        for conn in new:
            try:
                ready = conn.poll(_READY_TIMEOUT) and conn.recv() == "ready"
            except (EOFError, OSError):
                ready = False
            if not ready:
                self.close()
                raise LoadTimeout("a load-generator worker did not start")
        return self

    def run(self, job: FetchJob, *, processes: int | None = None) -> JobResult:
        """Run ``job`` split over up to ``processes`` workers (default: all); merge the results.

        Raises:
            LoadTimeout: not finished within ``job.timeout`` + 10 s (workers are replaced).
        """
        self.start()
        n = max(1, min(processes or self.processes, self.processes, len(job.urls)))
        # one worker starts on receipt; several start together a moment after dispatch
        start_at = time.monotonic() + _START_SLACK if n > 1 else 0.0
        parts = [job.urls[i::n] for i in range(n)]
        used = self._workers[:n]
        for i, ((_, conn), urls) in enumerate(zip(used, parts, strict=True)):
            conn.send(
                FetchJob(
                    urls=urls,
                    headers=job.headers,
                    timeout=job.timeout,
                    verify_digest=job.verify_digest,
                    start_at=start_at,
                    digests=job.digests[i::n] if job.digests else (),
                )
            )
        deadline = max(start_at, time.monotonic()) + job.timeout + 10.0
        merged = JobResult()
        slots: list[ClientResult | None] = [None] * len(job.urls)
        try:
            for i, (_, conn) in enumerate(used):
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    raise LoadTimeout(f"load job with {len(job.urls)} clients timed out")
                part: JobResult = conn.recv()
                for j, client in enumerate(part.clients[: len(parts[i])]):
                    slots[i + j * n] = client  # back in the order of job.urls
                for j in range(len(part.clients), len(parts[i])):
                    why = part.clients[0].error if part.clients else "no result"
                    slots[i + j * n] = ClientResult(url=parts[i][j], error=why)
        except (LoadTimeout, EOFError, OSError):
            self._restart()
            raise
        merged.clients = [c for c in slots if c is not None]
        merged.wall = max((c.total for c in merged.clients), default=0.0)
        return merged

    def _restart(self) -> None:
        self.close()
        self.start()

    def close(self) -> None:
        """Stop every worker (politely, then by force). Idempotent."""
        for _proc, conn in self._workers:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
            conn.close()
        for proc, _ in self._workers:
            proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2.0)
        self._workers.clear()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
