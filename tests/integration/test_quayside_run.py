"""`make run` / `quayside run`: an origin and an edge on embedded defaults, no Redis, no config;
the banner's offline example works as printed; Ctrl-C is a clean stop; a dying server is named."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import images, layouts, skopeo


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


def _run(data: Path, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
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
        **popen,  # type: ignore[call-overload]
    )


def _read_banner(proc: subprocess.Popen[str], timeout: float = 30.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "Stop with Ctrl-C" in line:
            return lines
    raise AssertionError("no complete banner:\n" + "\n".join(lines))


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _refuses(url: str) -> bool:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return True
    return False


def _finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> tuple[int, str]:
    try:
        rest, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, rest


def test_quayside_run_starts_origin_and_edge_that_push_and_pull(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = _run(data)
    try:
        origin, edge = _read_urls(proc)
        img = images.make_image(layer_sizes=(1 << 20, 200_000), seed=4242)
        layout = tmp_path / "layout"
        layouts.write_layout(layout, {"1.0": img})
        skopeo.push_layout(layout, "1.0", origin.split("//")[1], "team/app")
        edge_host = edge.split("//")[1]
        assert skopeo.inspect_raw(f"docker://{edge_host}/team/app:1.0") == img.manifest
        pulled = tmp_path / "pulled"
        skopeo.pull_to_layout(edge_host, "team/app", "1.0", pulled)
        for layer in img.layers:
            assert layouts.read_layout_blob(pulled, layer.digest) == layer.data
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


def test_banner_offline_example_pushes_and_pulls_as_printed(tmp_path: Path) -> None:
    """The banner's offline commands, run verbatim with skopeo (no internet): the demo image
    the command wrote goes to the origin and comes back through the edge, same digest."""
    data = tmp_path / "data"
    proc = _run(data)
    try:
        banner = _read_banner(proc)
        text = "\n".join(banner)
        assert f"{data}/origin.log" in text and f"{data}/edge.log" in text  # where the logs are
        assert (data / "origin.log").is_file() and (data / "edge.log").is_file()
        start = next(i for i, line in enumerate(banner) if line.startswith("Push and pull offline"))
        end = next(i for i, line in enumerate(banner) if line.startswith("With internet access"))
        commands = [shlex.split(line) for line in banner[start + 1 : end]]
        assert all(commands), banner
        skopeo_cmds = [c for c in commands if c[0] == "skopeo"]
        assert [c[1] for c in skopeo_cmds] == ["copy", "copy"]  # push, then pull
        for cmd in skopeo_cmds:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
        demo = layouts.layout_tags(data / "demo-image")["latest"]
        pulled = layouts.layout_tags(data / "pulled")["1.0"]
        assert pulled["digest"] == demo["digest"]
        manifest = json.loads(layouts.read_layout_blob(data / "pulled", pulled["digest"]))
        for blob in (manifest["config"], *manifest["layers"]):
            assert layouts.read_layout_blob(data / "pulled", blob["digest"]) == (
                layouts.read_layout_blob(data / "demo-image", blob["digest"])
            )
        assert any((data / "edge").rglob("data"))  # served through the edge's cache
    finally:
        proc.send_signal(signal.SIGTERM)
        rc, rest = _finish(proc)
    assert rc == 0, rest


@pytest.mark.parametrize("target", ["process group", "parent only"])
def test_ctrl_c_is_a_clean_stop(tmp_path: Path, target: str) -> None:
    """Ctrl-C in a terminal signals the whole foreground group (run and both servers);
    `kill -INT` signals only run. Either way: both servers stop, "stopped", exit 0."""
    proc = _run(tmp_path / "data", start_new_session=True)
    try:
        origin, edge = _read_urls(proc)
        servers = _children(proc.pid)
        assert len(servers) == 2
        if target == "process group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
    finally:
        rc, rest = _finish(proc)
    assert rc == 0, rest
    assert "quayside run: stopped" in rest
    assert "exited" not in rest and "Traceback" not in rest
    assert _refuses(origin) and _refuses(edge)
    assert not [pid for pid in servers if Path(f"/proc/{pid}").exists()]


def test_a_server_that_dies_is_named_with_its_log(tmp_path: Path) -> None:
    proc = _run(tmp_path / "data", start_new_session=True)
    try:
        _read_banner(proc)
        # The edge prints its listening event, then logs "listening": kill it after both
        # (a SIGKILL between the two, under load, left the log without the line).
        log = tmp_path / "data" / "edge.log"
        deadline = time.monotonic() + 10
        while '"msg":"listening"' not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        edge_pid = next(
            pid
            for pid in _children(proc.pid)
            if "edge" in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        )
        os.kill(edge_pid, signal.SIGKILL)
    finally:
        rc, rest = _finish(proc)
    assert rc == 1
    assert "the edge exited on its own (status -9)" in rest
    assert "edge.log" in rest
    assert "listening" in rest  # the end of the edge's log is shown
