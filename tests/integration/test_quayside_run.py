"""`make run` / `quayside run`: an origin and an edge on embedded defaults, no Redis, no config."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import images, skopeo


def _read_urls(proc: subprocess.Popen[str], timeout: float = 30.0) -> tuple[str, str]:
    origin = edge = None
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline and not (origin and edge):
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"origin \(push here\):\s+(\S+)", line):
            origin = m.group(1)
        if m := re.search(r"edge\s+\(pull here\):\s+(\S+)", line):
            edge = m.group(1)
    assert origin and edge, "quayside run did not print both URLs"
    return origin, edge


def test_quayside_run_starts_origin_and_edge_that_push_and_pull(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quayside",
            "run",
            "--data",
            str(data),
            "--origin-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        origin, edge = _read_urls(proc)
        img = images.make_image(layer_sizes=(1 << 20, 200_000), seed=4242)
        layout = tmp_path / "layout"
        images.write_layout(layout, {"1.0": img})
        skopeo.push_layout(layout, "1.0", origin.split("//")[1], "team/app")
        edge_host = edge.split("//")[1]
        assert skopeo.inspect_raw(f"docker://{edge_host}/team/app:1.0") == img.manifest
        pulled = tmp_path / "pulled"
        skopeo.pull_to_layout(edge_host, "team/app", "1.0", pulled)
        for layer in img.layers:
            assert images.read_layout_blob(pulled, layer.digest) == layer.data
        # data landed where the README says: a registry:2 root and an edge cache
        assert (
            data / "origin" / "docker" / "registry" / "v2" / "repositories" / "team" / "app"
        ).is_dir()
        assert any((data / "edge").rglob("data"))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
