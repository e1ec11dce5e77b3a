"""``quayside run`` (``make run``): an origin and one edge in front of it, on embedded defaults.

Starts two child processes (``quayside origin serve`` and ``quayside edge serve``), waits until
each prints its ``listening`` line, then prints how to push and pull. Data lives under
``--data`` (default ``./data``): ``origin/`` is a registry:2-compatible root, ``edge/`` the edge's
cache. No Redis, no configuration file needed. Ctrl-C or SIGTERM stops both cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_USAGE = """\
Quayside is running.
  origin (push here):  {origin}
  edge   (pull here):  {edge}   (upstream: the origin; cache {cache_size} in {data}/edge)

Push an image to the origin:
  skopeo copy --dest-tls-verify=false docker://docker.io/library/alpine:latest docker://{origin_host}/library/alpine:latest
  podman push --tls-verify=false IMAGE {origin_host}/team/app:1.0
Pull it through the edge:
  skopeo copy --src-tls-verify=false docker://{edge_host}/library/alpine:latest oci:/tmp/alpine:latest
  podman pull --tls-verify=false {edge_host}/team/app:1.0
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


def _start(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server child (``env`` added to ours); return it and its URL once it prints the
    listening line."""
    log_file = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "quayside", *args],
        stdout=subprocess.PIPE,
        stderr=log_file,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "listening":
                threading.Thread(target=_pump, args=(proc.stdout, log_file), daemon=True).start()
                return proc, event["url"]
        log_file.write(line)
    proc.kill()
    raise RuntimeError(f"{args[0]} did not start; see {log_path}")


def _pump(src, dst) -> None:  # keep reading the child's stdout so it never blocks
    for line in iter(src.readline, b""):
        dst.write(line)
        dst.flush()


def run(args: RunSettings) -> int:
    """Start both servers, print the banner, wait; returns the exit status."""
    data = Path(args.data).resolve()
    (data / "origin").mkdir(parents=True, exist_ok=True)
    (data / "edge").mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        origin, origin_url = _start(
            [
                "origin",
                "serve",
                "--listen",
                args.origin_listen,
                "--root",
                str(data / "origin"),
                "--log-level",
                args.log_level,
            ],
            data / "origin.log",
            # Deletes are off by default (as in registry:2); the local sandbox turns them on.
            {"REGISTRY_STORAGE_DELETE_ENABLED": "true"},
        )
        procs.append(origin)
        edge, edge_url = _start(
            [
                "edge",
                "serve",
                "--listen",
                args.edge_listen,
                "--cache-dir",
                str(data / "edge"),
                "--cache-size",
                args.cache_size,
                "--upstream",
                f"origin={origin_url}",
                "--log-level",
                args.log_level,
            ],
            data / "edge.log",
        )
        procs.append(edge)
    except RuntimeError as exc:
        print(f"quayside run: {exc}", file=sys.stderr)
        _stop(procs)
        return 1
    print(
        _USAGE.format(
            origin=origin_url,
            edge=edge_url,
            origin_host=origin_url.split("//", 1)[1],
            edge_host=edge_url.split("//", 1)[1],
            data=data,
            cache_size=args.cache_size,
        ),
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set():
            if any(p.poll() is not None for p in procs):
                print(
                    "quayside run: a server exited; see the logs under " + str(data),
                    file=sys.stderr,
                )
                _stop(procs)
                return 1
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    _stop(procs)
    return 0


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
