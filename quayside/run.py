"""``quayside run`` (``make run``): an origin and one edge in front of it, on embedded defaults.

Starts two child processes (``quayside origin serve`` and ``quayside edge serve``), waits until
each prints its ``listening`` line, writes a tiny demo image (:mod:`quayside.demoimage`) to
``DATA/demo-image`` and prints a banner: where to push and pull, commands that work offline
(the demo image) and with internet access, and where the logs are. Data lives under ``--data``
(default ``./data``): ``origin/`` is a registry:2-compatible root, ``edge/`` the edge's cache,
``origin.log`` and ``edge.log`` the servers' JSON logs (appended; the terminal keeps only the
banner). No Redis, no configuration file needed.

Stopping: Ctrl-C (SIGINT, whether it reaches only this process or, from a terminal, the
children too) or SIGTERM stops the edge, then the origin, prints ``quayside run: stopped`` and
exits 0. A server that exits on its own is reported with the end of its log and the exit
status is 1; a server that does not start within 30 s, too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from quayside.demoimage import write_demo_layout

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# A child that exits this soon before our own SIGINT/SIGTERM arrives was stopped by the same
# Ctrl-C (a terminal signals the whole foreground process group).
SIGNAL_GRACE = 1.0
LOG_TAIL_LINES = 15

_BANNER = """\
Quayside is running.
  origin (push here):  {origin}
  edge   (pull here):  {edge}   (upstream: the origin; cache {cache_size} in {data}/edge)
  logs:                {data}/origin.log  {data}/edge.log   (JSON lines; tail -f to follow)

Push and pull offline, with the demo image written to {data}/demo-image:
  skopeo copy --dest-tls-verify=false {demo_source} docker://{origin_host}/team/app:1.0
  skopeo copy --src-tls-verify=false docker://{edge_host}/team/app:1.0 {pulled}
  podman pull --tls-verify=false {edge_host}/team/app:1.0
With internet access, any public image:
  skopeo copy --dest-tls-verify=false docker://docker.io/library/alpine:latest docker://{origin_host}/library/alpine:latest
  podman pull --tls-verify=false {edge_host}/library/alpine:latest
Docker: add "{edge_host}" to "insecure-registries" in /etc/docker/daemon.json, then
  docker pull {edge_host}/team/app:1.0
Metrics: {origin}/metrics and {edge}/metrics.  Stop with Ctrl-C.
"""


@dataclass(frozen=True)
class RunSettings:
    """What ``quayside run`` takes (its flags); see :mod:`quayside.cli.run`."""

    data: Path = Path("./data")
    origin_listen: str = "127.0.0.1:5000"
    edge_listen: str = "127.0.0.1:5001"
    cache_size: str = "10GiB"
    log_level: str = "info"


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes] = field(repr=False)
    url: str = ""


class StartError(RuntimeError):
    """A server did not print its listening line (it exited, or took over 30 s)."""


def run(settings: RunSettings) -> int:
    """Start both servers, print the banner, wait for Ctrl-C/SIGTERM; returns the exit status
    (0 after a requested stop, 1 when a server failed to start or exited on its own)."""
    data = Path(settings.data).resolve()
    (data / "origin").mkdir(parents=True, exist_ok=True)
    (data / "edge").mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    children: list[_Child] = []
    with _signals_set(stop):
        try:
            # Deletes are off by default (as in registry:2); the local sandbox turns them on.
            sandbox = {"REGISTRY_STORAGE_DELETE_ENABLED": "true"}
            children.append(_start("origin", _origin_args(settings, data), data, stop, sandbox))
            children.append(_start("edge", _edge_args(settings, data, children[0].url), data, stop))
        except StartError as exc:
            _stop(children)
            if stop.is_set():
                return _stopped()
            print(f"quayside run: {exc}", file=sys.stderr)
            return 1
        write_demo_layout(data / "demo-image", "latest")
        print(_banner(children[0].url, children[1].url, data, settings.cache_size), flush=True)
        failed = _wait(children, stop)
        _stop(children)
    if failed is None:
        return _stopped()
    status = failed.proc.returncode
    print(
        f"quayside run: the {failed.name} exited on its own (status {status}); "
        f"the end of {failed.log_path}:",
        file=sys.stderr,
    )
    print(_tail(failed.log_path), file=sys.stderr)
    return 1


def _origin_args(settings: RunSettings, data: Path) -> list[str]:
    return [
        *("origin", "serve", "--listen", settings.origin_listen),
        *("--root", str(data / "origin"), "--log-level", settings.log_level),
    ]


def _edge_args(settings: RunSettings, data: Path, origin_url: str) -> list[str]:
    return [
        *("edge", "serve", "--listen", settings.edge_listen),
        *("--cache-dir", str(data / "edge"), "--cache-size", settings.cache_size),
        *("--upstream", f"origin={origin_url}", "--log-level", settings.log_level),
    ]


def _banner(origin_url: str, edge_url: str, data: Path, cache_size: str) -> str:
    return _BANNER.format(
        origin=origin_url,
        edge=edge_url,
        origin_host=origin_url.split("//", 1)[1],
        edge_host=edge_url.split("//", 1)[1],
        data=data,
        cache_size=cache_size,
        demo_source=shlex.quote(f"oci:{data / 'demo-image'}:latest"),
        pulled=shlex.quote(f"oci:{data / 'pulled'}:1.0"),
    )


@contextlib.contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (no KeyboardInterrupt) for the duration."""
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start(
    name: str,
    args: list[str],
    data: Path,
    stop: threading.Event,
    env: dict[str, str] | None = None,
) -> _Child:
    """Start a server child (``env`` added to ours); return it once it printed its listening
    line.

    Raises:
        StartError: it exited first, took longer than 30 s, or a stop was requested.
    """
    log_path = data / f"{name}.log"
    log_file = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "quayside", *args],
        stdout=subprocess.PIPE,
        stderr=log_file,
        env={**os.environ, **(env or {})},
    )
    child = _Child(name, proc, log_path, log_file)
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and not stop.is_set():
        line = proc.stdout.readline()
        if not line:
            break
        with contextlib.suppress(ValueError, AttributeError):
            event = json.loads(line)
            if event.get("event") == "listening":
                child.url = event["url"]
                threading.Thread(target=_pump, args=(proc.stdout, log_file), daemon=True).start()
                return child
        log_file.write(line)
    _stop([child])
    raise StartError(f"the {name} did not start; the end of {log_path}:\n{_tail(log_path)}")


def _pump(src: IO[bytes], dst: IO[bytes]) -> None:
    """Keep reading the child's stdout into its log so it never blocks on a full pipe."""
    with contextlib.suppress(ValueError, OSError):  # the log closed at stop
        for line in iter(src.readline, b""):
            dst.write(line)
            dst.flush()


def _wait(children: list[_Child], stop: threading.Event) -> _Child | None:
    """Wait for a stop request (``None``) or a child that exits on its own (that child)."""
    while not stop.wait(0.2):
        exited = next((c for c in children if c.proc.poll() is not None), None)
        if exited is not None:
            return None if stop.wait(SIGNAL_GRACE) else exited
    return None


def _stop(children: list[_Child]) -> None:
    """SIGTERM to each running child, the edge first; wait up to 15 s each, then kill."""
    for child in reversed(children):
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
        try:
            child.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()
        child.log_file.close()


def _stopped() -> int:
    print("quayside run: stopped", flush=True)
    return 0


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    with contextlib.suppress(OSError):
        text = path.read_bytes()[-64 * 1024 :].decode("utf-8", "replace")
        return "\n".join("  " + line for line in text.splitlines()[-lines:])
    return "  (no log)"
