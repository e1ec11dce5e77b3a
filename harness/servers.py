"""Our own servers as real child processes: ``quayside origin serve`` and ``quayside edge serve``.

Each launcher runs ``python -m quayside <component> serve --listen 127.0.0.1:PORT ...`` with
stdout+stderr in one log file, and :meth:`QuaysideServer.start` returns once the child printed
its ``{"event": "listening", "url": ...}`` line (the URL is read from that line, so port 0
works). Guarantees:

- :meth:`start` raises :class:`harness.procs.ProcessError` with the log tail if the child exits
  or prints no listening line within ``start_timeout``.
- A restart (:meth:`start` after :meth:`kill`/:meth:`stop`) binds the port of the previous run
  unless ``new_port=True``, so clients configured with :attr:`url` keep working.
- :meth:`close` stops the child and deletes the temp dir this object created (never a
  directory passed in by the caller).
- ``config`` is either a mapping (written as JSON into the workdir at each start) or the path of
  an existing config file (passed as is); ``main_module="origin"`` runs the component's own
  entry point (``python -m origin``) instead of ``python -m quayside origin serve``.

Observation: :meth:`metrics` parses ``/metrics`` (Prometheus text) into ``{(name, labels):
value}``; :meth:`metric` sums the samples of one name matching some labels. Peak RSS comes from
``/proc`` (:meth:`peak_rss_bytes`); :meth:`server_errors` lists the 5xx access-log lines.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from prometheus_client.parser import text_string_to_metric_families

from harness.service import ListeningLineService

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class QuaysideServer(ListeningLineService):
    """Common launcher; subclasses say which component and which arguments."""

    component = ""
    stop_timeout = 10.0

    def __init__(
        self,
        *,
        workdir: str | Path | None = None,
        listen_port: int = 0,
        config: Mapping[str, Any] | str | Path | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        log_level: str = "info",
        start_timeout: float = 20.0,
        name: str | None = None,
        main_module: str | None = None,
    ) -> None:
        super().__init__(
            name=name or self.component,
            workdir=workdir,
            temp_prefix=f"qs-{self.component}-",
            start_timeout=start_timeout,
        )
        self.listen_port = listen_port
        self.config: dict[str, Any] | Path | None = (
            Path(config) if isinstance(config, str | Path) else dict(config) if config else None
        )
        self.main_module = main_module
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self.log_level = log_level
        self._bound_port = 0
        self._launch_port = listen_port
        self._runs = 0

    @property
    def log_path(self) -> Path:
        """The log of the current run (each run gets its own file: ``<name>-<n>.log``)."""
        return self.workdir / f"{self.name}-{self._runs}.log"

    # -- lifecycle -------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The command line up to ``--listen``: ``python -m quayside <component> serve``, or
        ``python -m <main_module>``."""
        if self.main_module is not None:
            return [sys.executable, "-m", self.main_module]
        return [sys.executable, "-m", "quayside", self.component, "serve"]

    def component_args(self) -> list[str]:
        """Arguments after ``<component> serve --listen ...`` (subclasses)."""
        return []

    def start(self, *, new_port: bool = False) -> Self:
        """Start (or restart) the child and wait for its listening line."""
        self.launch(new_port=new_port)
        return self.wait_ready()

    def launch(self, *, new_port: bool = False) -> Self:
        """Start the child without waiting (then :meth:`wait_listening`); lets a test start
        several servers in parallel. A no-op while the child runs."""
        if not self.running:
            reuse = self._bound_port and not new_port
            self._launch_port = self._bound_port if reuse else self.listen_port
        return super().launch()

    def prepare(self) -> None:
        self._runs += 1
        if isinstance(self.config, dict):
            self._written_config.write_text(json.dumps(self.config, indent=2))

    def argv(self) -> list[str]:
        args = [
            *self.command(),
            "--listen", f"127.0.0.1:{self._launch_port}",
            "--log-level", self.log_level,
        ]  # fmt: skip
        if isinstance(self.config, Path):
            args += ["--config", str(self.config)]
        elif self.config is not None:
            args += ["--config", str(self._written_config)]
        return args + self.component_args() + self.extra_args

    @property
    def _written_config(self) -> Path:
        """Where a mapping ``config`` is written at each start."""
        return self.workdir / f"{self.name}-config.json"

    def process_env(self) -> dict[str, str]:
        return {"PYTHONUNBUFFERED": "1", **self.env}

    def ready(self) -> bool:
        if not super().ready():
            return False
        self._bound_port = self.port
        return True

    def wait_listening(self) -> Self:
        """Block until the child printed its listening line; set :attr:`url`.

        Raises:
            ProcessError: the child exited or stayed silent for ``start_timeout`` s (the
                message has the command line and the log tail).
        """
        return self.wait_ready()

    def restart(self, *, new_port: bool = False) -> Self:
        """Graceful stop, then :meth:`start` (same port unless ``new_port``)."""
        self.stop()
        return self.start(new_port=new_port)

    # -- observation -------------------------------------------------------------------------

    def server_errors(self) -> list[str]:
        """The current run's access-log lines (JSON) with a 5xx ``status``."""
        out = []
        for line in self.log_text().splitlines():
            if '"status"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            status = event.get("status") if isinstance(event, dict) else None
            if isinstance(status, int) and status >= 500:
                out.append(line)
        return out

    def metrics(self, timeout: float = 5.0) -> Samples:
        """``GET /metrics`` parsed: ``{(sample_name, sorted label items): value}``."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=timeout) as resp:
            text = resp.read().decode()
        out: Samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                out[key] = float(sample.value)
        return out

    def metric(self, name: str, samples: Samples | None = None, **labels: str) -> float:
        """Sum of the samples called ``name`` (``_total`` added if absent) with these labels."""
        samples = self.metrics() if samples is None else samples
        names = {name, name + "_total"} if not name.endswith("_total") else {name}
        return sum(
            value
            for (sname, slabels), value in samples.items()
            if sname in names and all(dict(slabels).get(k) == v for k, v in labels.items())
        )


class OriginProcess(QuaysideServer):
    """``quayside origin serve --root DIR`` (default: ``workdir/root``)."""

    component = "origin"

    def __init__(self, root: str | Path | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root) if root is not None else self.workdir / "root"
        self.root.mkdir(parents=True, exist_ok=True)

    def component_args(self) -> list[str]:
        return ["--root", str(self.root)]


class EdgeProcess(QuaysideServer):
    """``quayside edge serve`` with a cache dir, a size bound and named upstreams.

    ``upstreams`` maps name → URL (``--upstream NAME=URL``, in order: the first is the
    default). ``advertise`` defaults to what the edge derives itself (its bound URL).
    """

    component = "edge"

    def __init__(
        self,
        upstreams: Mapping[str, str] | Iterable[tuple[str, str]],
        *,
        cache_dir: str | Path | None = None,
        cache_size: str | int = "1GiB",
        redis_url: str | None = None,
        advertise: str | None = None,
        tag_ttl: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        items = upstreams.items() if isinstance(upstreams, Mapping) else upstreams
        self.upstreams = [(str(n), str(u)) for n, u in items]
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.workdir / "cache"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.cache_size = cache_size
        self.redis_url = redis_url
        self.advertise = advertise
        self.tag_ttl = tag_ttl

    def component_args(self) -> list[str]:
        args = ["--cache-dir", str(self.cache_dir), "--cache-size", str(self.cache_size)]
        for name, url in self.upstreams:
            args += ["--upstream", f"{name}={url}"]
        if self.redis_url:
            args += ["--redis", self.redis_url]
        if self.advertise:
            args += ["--advertise", self.advertise]
        if self.tag_ttl is not None:
            args += ["--tag-ttl", f"{self.tag_ttl:g}"]
        return args

    def cache_files(self) -> list[Path]:
        """Every regular file under the cache dir (for partial-file and disk-use checks)."""
        out: list[Path] = []
        for dirpath, _dirs, files in os.walk(self.cache_dir):
            out.extend(Path(dirpath, f) for f in files)
        return out


def tree_bytes(root: str | Path) -> int:
    """Sum of the sizes of the regular files under ``root`` (0 when absent); files vanishing
    during the walk (an eviction racing the sampler) are skipped."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                continue
    return total


class ServerGroup:
    """Starts origins and edges under one directory and stops them all in :meth:`close`
    (for a test fixture: ``group = ServerGroup(tmp_path); yield group; group.close()``)."""

    def __init__(self, base: str | Path) -> None:
        self.base = Path(base)
        self.started: list[QuaysideServer] = []

    def _workdir(self, kind: str) -> Path:
        return self.base / f"{kind}-{len(self.started)}"

    def edge(
        self, upstreams: Mapping[str, str] | Iterable[tuple[str, str]], **kwargs: Any
    ) -> EdgeProcess:
        """A started :class:`EdgeProcess` (``kwargs`` as for its constructor)."""
        kwargs.setdefault("workdir", self._workdir("edge"))
        kwargs.setdefault("name", f"edge{len(self.started)}")
        edge = EdgeProcess(upstreams, **kwargs)
        self.started.append(edge)
        edge.start()
        return edge

    def edges(
        self, count: int, upstreams: Mapping[str, str] | Iterable[tuple[str, str]], **kwargs: Any
    ) -> list[EdgeProcess]:
        """``count`` edges with the same settings (own workdirs and caches), started in
        parallel."""
        upstreams = list(upstreams.items() if isinstance(upstreams, Mapping) else upstreams)
        out: list[EdgeProcess] = []
        for _ in range(count):
            edge = EdgeProcess(
                upstreams,
                workdir=self._workdir("edge"),
                name=f"edge{len(self.started)}",
                **kwargs,
            )
            self.started.append(edge)
            out.append(edge)
            edge.launch()
        for edge in out:
            edge.wait_listening()
        return out

    def origin(self, **kwargs: Any) -> OriginProcess:
        """A started :class:`OriginProcess`."""
        kwargs.setdefault("workdir", self._workdir("origin"))
        origin = OriginProcess(**kwargs)
        self.started.append(origin)
        origin.start()
        return origin

    def log_tails(self, lines: int = 30) -> str:
        """The last ``lines`` of every server's current log (for failure messages)."""
        parts = []
        for server in self.started:
            parts.append(f"--- {server.name} ({server.url}) ---\n{server.log_tail(lines)}")
        return "\n".join(parts)

    def close(self) -> None:
        for server in reversed(self.started):
            server.close()


def disk_bytes(*roots: str | Path) -> int:
    """Bytes of the regular files under all ``roots``, each file (inode) counted once: a file
    renamed from one root to another while the walk runs is not counted twice."""
    seen: dict[tuple[int, int], int] = {}
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                try:
                    st = os.lstat(os.path.join(dirpath, f))
                except FileNotFoundError:
                    continue
                seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())
