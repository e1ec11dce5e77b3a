"""The records a :class:`bench.loadgen.LoadGenerator` and its worker processes exchange.

A :class:`FetchJob` goes to a worker, a :class:`JobResult` (one :class:`ClientResult` per URL,
in URL order) comes back. All three are plain dataclasses of built-in types, so they pickle
across the ``spawn`` boundary unchanged; a job is frozen, so splitting it over workers never
alters the caller's copy. Times in results are seconds since the job's common start instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FetchJob:
    """One round of concurrent GETs: ``urls[i]`` is client ``i``'s request."""

    urls: tuple[str, ...]
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 60.0
    verify_digest: str | None = None
    start_at: float = 0.0  # time.monotonic() instant; 0 means "as soon as received"
    digests: tuple[str, ...] = ()  # per URL: the body's expected digest ("" = no check)

    def digest_for(self, i: int) -> str | None:
        """The digest client ``i``'s body is checked against (``None``: not checked)."""
        if self.digests:
            return self.digests[i] or None
        return self.verify_digest


@dataclass
class ClientResult:
    """What one client saw. Times are seconds since the job's common start instant."""

    url: str
    status: int = 0
    bytes: int = 0
    t_headers: float = 0.0  # first response byte
    ttfb: float = 0.0  # first body byte
    total: float = 0.0
    error: str = ""
    digest_ok: bool | None = None
    max_gap: float = 0.0  # longest pause between two body reads (a stalled stream shows here)

    @property
    def ok(self) -> bool:
        return not self.error and 200 <= self.status < 300


@dataclass
class JobResult:
    """All clients of a job; ``wall`` is from the common start to the last client's end."""

    clients: list[ClientResult] = field(default_factory=list)
    wall: float = 0.0

    @property
    def total_bytes(self) -> int:
        return sum(c.bytes for c in self.clients)

    @property
    def errors(self) -> list[str]:
        return [f"{c.url}: {c.error or c.status}" for c in self.clients if not c.ok]
