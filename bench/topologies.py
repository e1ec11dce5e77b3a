"""The contenders, each a set of real processes on loopback in front of an upstream.

- ``direct``: the upstream ``docker-registry`` itself (what a client gets with no cache);
- ``nginx-static``: nginx serving the blob files from a directory with sendfile (the loopback
  limit for warm throughput; it speaks no registry protocol, so only blob scenarios);
- ``reference-proxy``: ``docker-registry`` with ``proxy.remoteurl`` (the reference pull-through
  cache);
- ``nginx-cache``: nginx ``proxy_cache`` with ``proxy_cache_lock on``;
- ``quayside-1``: one Quayside edge; ``quayside-3``: three edges sharing one ``redis-server``
  (multi-client scenarios spread their clients round-robin over the nodes);
- ``origin`` and ``quayside-1-origin``: the Quayside origin served directly, and an edge in
  front of it (the image-pull scenario's second upstream).

Every cache contender in front of docker-registry gets its own upstream *view*: another
``docker-registry`` process serving the same storage directory on its own port, with its own
access log. What a contender asked upstream is then read from a log nobody else writes to, so
a late background fetch (the reference proxy finishes its second copy after its client is
served) is never counted against the next contender. The origin is shared by ``origin`` and
``quayside-1-origin``; their requests are told apart by User-Agent (``quayside/...``).

A :class:`Contender` builds URLs for any node and names the processes whose memory counts.
:class:`Topology` starts the upstreams and every selected contender (in parallel where the
launchers allow it) and stops everything in :meth:`Topology.close`, which never raises and is
safe to call after a partial start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.nginx import Nginx
from harness.procs import Process
from harness.redis import RedisServer
from harness.registry import DockerRegistry
from harness.servers import EdgeProcess, OriginProcess, QuaysideServer

USER_AGENT_PREFIX = "quayside/"  # what Quayside sends upstream (regcore.USER_AGENT)
KIND_QUAYSIDE = "quayside"
KIND_PEER = "peer"
KIND_BASELINE = "baseline"

_REGISTRY_SCENARIOS = frozenset(
    {"edge_rss", "cold_blob", "herd", "warm_blob", "manifest_tag", "manifest_digest", "image_pull"}
)
_STATIC_SCENARIOS = frozenset({"edge_rss", "warm_blob"})
_ORIGIN_SCENARIOS = frozenset({"image_pull"})


@dataclass
class Contender:
    """One contender: its node URLs, what it supports and the processes that serve."""

    name: str
    kind: str
    description: str
    nodes: list[str]
    upstream: str  # "registry" or "origin"
    scenarios: frozenset[str]
    processes: Callable[[], list[Process]]
    group_memory: bool = False  # sum the process group (nginx master + workers)
    static_paths: dict[str, str] = field(default_factory=dict)  # digest -> URL path (static)
    upstream_log: Path | None = None  # access log of what this contender asked upstream
    upstream_agent: str = ""  # count only upstream requests whose User-Agent has this
    upstream_agent_exclude: str = ""  # ... and not this

    def node(self, i: int) -> str:
        return self.nodes[i % len(self.nodes)]

    def host(self, i: int = 0) -> str:
        """``127.0.0.1:PORT`` of node ``i`` (skopeo's registry host)."""
        return self.node(i).split("//", 1)[1]

    def blob_url(self, repo: str, digest: str, i: int = 0) -> str:
        if self.static_paths:
            return self.node(i) + self.static_paths[digest]
        return f"{self.node(i)}/v2/{repo}/blobs/{digest}"

    def manifest_url(self, repo: str, reference: str, i: int = 0) -> str:
        return f"{self.node(i)}/v2/{repo}/manifests/{reference}"

    def memory_per_node(self) -> list[tuple[int, int]]:
        """``(current RSS, peak RSS)`` in bytes for each serving process (group-summed for
        nginx). Dead processes read 0."""
        out = []
        for proc in self.processes():
            if not proc.running:
                out.append((0, 0))
                continue
            out.append(
                (
                    proc.rss_bytes(group=self.group_memory),
                    proc.peak_rss_bytes(group=self.group_memory),
                )
            )
        return out

    def describe(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "description": self.description,
            "nodes": len(self.nodes),
            "upstream": self.upstream,
            "scenarios": sorted(self.scenarios),
        }


def scenarios_of(name: str) -> frozenset[str]:
    """The scenarios contender ``name`` takes part in (empty for an unknown name)."""
    if name == "nginx-static":
        return _STATIC_SCENARIOS
    if name in ("origin", "quayside-1-origin"):
        return _ORIGIN_SCENARIOS
    if name in ("direct", "reference-proxy", "nginx-cache", "quayside-1", "quayside-3"):
        return _REGISTRY_SCENARIOS
    return frozenset()


class Topology:
    """Upstreams plus contenders, all under ``workdir``; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        *,
        edge_cache_size: str = "16GiB",
        wan_upstreams: dict[str, str] | None = None,
        wan_scenarios: frozenset[str] = frozenset(),
    ) -> None:
        self.workdir = workdir
        self.edge_cache_size = edge_cache_size
        # WAN mode (bench.wan): each contender talks to the upstream across the link, through
        # its own relay (so the link counts its bytes apart)
        self.wan_upstreams = wan_upstreams or {}
        self.registry_scenarios = wan_scenarios if wan_upstreams else _REGISTRY_SCENARIOS
        self.registry: DockerRegistry | None = None
        self.origin: OriginProcess | None = None
        self.contenders: dict[str, Contender] = {}
        self.failures: dict[str, str] = {}
        self._closers: list[Callable[[], None]] = []
        self._static_dir = workdir / "static"

    # -- upstreams ---------------------------------------------------------------------------

    def start_upstreams(self, *, with_origin: bool) -> None:
        """Start ``docker-registry`` (always) and the Quayside origin (when asked; a failure
        is recorded in :attr:`failures` under ``origin`` and the origin is left out).

        Raises:
            harness.procs.ProcessError: docker-registry did not start.
        """
        origin: OriginProcess | None = None
        if with_origin:
            origin = OriginProcess(workdir=self.workdir / "origin", name="origin")
            self._closers.append(origin.close)
            try:
                origin.launch()
            except Exception as exc:
                self.failures["origin"] = f"{type(exc).__name__}: {exc}"
                origin = None
        self.registry = DockerRegistry(workdir=self.workdir / "upstream")
        self._closers.append(self.registry.close)
        self.registry.start()
        if origin is not None:
            try:
                origin.wait_listening()
                self.origin = origin
            except Exception as exc:
                self.failures["origin"] = f"{type(exc).__name__}: {exc}"

    # -- contenders ----------------------------------------------------------------------------

    def start_contenders(self, names: Sequence[str]) -> None:
        """Start every named contender; one that fails is recorded in :attr:`failures`."""
        assert self.registry is not None, "start_upstreams first"
        registry = self.registry
        pending: list[tuple[str, list[QuaysideServer], Callable[[], Contender]]] = []
        for name in names:
            try:
                started = self._start(name, registry)
            except Exception as exc:
                self.failures[name] = f"{type(exc).__name__}: {exc}"
                continue
            if started is None:
                continue
            servers, finish = started
            pending.append((name, servers, finish))
        for name, servers, finish in pending:
            try:
                for server in servers:
                    server.wait_listening()
                self.contenders[name] = finish()
            except Exception as exc:
                self.failures[name] = f"{type(exc).__name__}: {exc}"

    def _upstream(self, name: str, registry: DockerRegistry) -> tuple[str, Path]:
        """URL and access log of what ``name`` talks to: over loopback, another
        docker-registry on ``registry``'s storage with its own port and log; in WAN mode,
        the far end of the link (one shared log: WAN contenders run one at a time)."""
        if self.wan_upstreams:
            return self.wan_upstreams[name], registry.log_path
        view = DockerRegistry(registry.root, workdir=self.workdir / f"upstream-{name}")
        self._closers.append(view.close)
        view.start()
        return view.url, view.log_path

    def _edge(self, name: str, upstream: str, redis_url: str | None = None) -> EdgeProcess:
        edge = EdgeProcess(
            {"up": upstream},
            workdir=self.workdir / name,
            name=name,
            cache_size=self.edge_cache_size,
            redis_url=redis_url,
            log_level="info",  # as shipped: JSON access log on
        )
        self._closers.append(edge.close)
        edge.launch()
        return edge

    def _start(
        self, name: str, registry: DockerRegistry
    ) -> tuple[list[QuaysideServer], Callable[[], Contender]] | None:
        """Launch ``name``; return the servers still to wait for and a finisher."""
        scenarios = self.registry_scenarios
        if name == "direct":
            self.contenders[name] = Contender(
                name,
                KIND_BASELINE,
                "docker-registry (upstream) served directly"
                + (" across the WAN" if self.wan_upstreams else ""),
                [self._upstream(name, registry)[0] if self.wan_upstreams else registry.url],
                "registry",
                scenarios,
                lambda: [registry.process] if registry.process else [],
                upstream_log=registry.log_path,
            )
            return None
        if name == "nginx-static":
            self._static_dir.mkdir(parents=True, exist_ok=True)
            nginx = Nginx.static(self._static_dir, url_prefix="/files", workdir=self.workdir / name)
            self._closers.append(nginx.close)
            nginx.start()
            self.contenders[name] = Contender(
                name,
                KIND_BASELINE,
                "nginx serving the blob file from disk (sendfile), 1 worker",
                [nginx.url],
                "registry",
                _STATIC_SCENARIOS,
                lambda: [nginx.process] if nginx.process else [],
                group_memory=True,
            )
            return None
        if name == "reference-proxy":
            view_url, view_log = self._upstream(name, registry)
            proxy = DockerRegistry(workdir=self.workdir / name, proxy_remoteurl=view_url)
            self._closers.append(proxy.close)
            proxy.start()
            self.contenders[name] = Contender(
                name,
                KIND_PEER,
                "docker-registry 2.8 with proxy.remoteurl (reference pull-through)",
                [proxy.url],
                "registry",
                scenarios,
                lambda: [proxy.process] if proxy.process else [],
                upstream_log=view_log,
            )
            return None
        if name == "nginx-cache":
            view_url, view_log = self._upstream(name, registry)
            nginx = Nginx.proxy(view_url, workdir=self.workdir / name)
            self._closers.append(nginx.close)
            nginx.start()
            self.contenders[name] = Contender(
                name,
                KIND_PEER,
                "nginx proxy_cache + proxy_cache_lock, 1 worker",
                [nginx.url],
                "registry",
                scenarios,
                lambda: [nginx.process] if nginx.process else [],
                group_memory=True,
                upstream_log=view_log,
            )
            return None
        if name == "quayside-1":
            view_url, view_log = self._upstream(name, registry)
            edge = self._edge(name, view_url)
            return [edge], lambda: _edge_contender(
                name,
                "Quayside edge, 1 node",
                [edge],
                "registry",
                scenarios,
                upstream_log=view_log,
            )
        if name == "quayside-3":
            redis = RedisServer(workdir=self.workdir / f"{name}-redis")
            self._closers.append(redis.close)
            redis.start()
            view_url, view_log = self._upstream(name, registry)
            edges = [self._edge(f"{name}-n{i}", view_url, redis.url) for i in range(3)]
            return edges, lambda: _edge_contender(
                name,
                "Quayside edge, 3 nodes + redis-server (clients round-robin)",
                edges,
                "registry",
                scenarios,
                upstream_log=view_log,
            )
        if name == "origin":
            origin = self.origin
            if origin is None:
                raise RuntimeError(self.failures.get("origin", "origin not started"))
            self.contenders[name] = Contender(
                name,
                KIND_BASELINE,
                "Quayside origin served directly",
                [origin.url],
                "origin",
                _ORIGIN_SCENARIOS,
                lambda: [origin.process] if origin.process else [],
                upstream_log=origin.log_path,
                upstream_agent_exclude=USER_AGENT_PREFIX,
            )
            return None
        if name == "quayside-1-origin":
            if self.origin is None:
                raise RuntimeError(self.failures.get("origin", "origin not started"))
            origin_log = self.origin.log_path
            edge = self._edge(name, self.origin.url)
            return [edge], lambda: _edge_contender(
                name,
                "Quayside edge, 1 node, in front of the Quayside origin",
                [edge],
                "origin",
                _ORIGIN_SCENARIOS,
                upstream_log=origin_log,
                upstream_agent=USER_AGENT_PREFIX,
            )
        raise ValueError(f"unknown contender {name!r}")

    # -- static files ----------------------------------------------------------------------

    def add_static_blob(self, digest: str) -> None:
        """Expose the upstream's blob file through ``nginx-static`` (hard link, else copy)."""
        contender = self.contenders.get("nginx-static")
        if contender is None or self.registry is None:
            return
        src = self.registry.blob_path(digest)
        dst = self._static_dir / digest.split(":", 1)[1]
        if not dst.exists():
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        contender.static_paths[digest] = f"/files/{dst.name}"

    # -- teardown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything that was started, newest first. Never raises."""
        while self._closers:
            closer = self._closers.pop()
            with contextlib.suppress(Exception):
                closer()


def _edge_contender(
    name: str,
    description: str,
    edges: list[EdgeProcess],
    upstream: str,
    scenarios: frozenset[str],
    **extra: Any,
) -> Contender:
    return Contender(
        name,
        KIND_QUAYSIDE,
        description,
        [e.url for e in edges],
        upstream,
        scenarios,
        lambda: [e.process for e in edges if e.process is not None],
        **extra,
    )
