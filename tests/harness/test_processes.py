"""harness.procs / harness.ports: signals, memory readings, cleanup, waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.ports import free_port, port_open, wait_for_port, wait_http
from harness.procs import Process, wait_until

_SERVER = "import http.server,sys; http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()"


def test_process_lifecycle_pause_and_memory(tmp_path: Path) -> None:
    port = free_port()
    with Process([sys.executable, "-c", _SERVER, str(port)], cwd=tmp_path, name="pyhttp") as proc:
        wait_for_port("127.0.0.1", port, timeout=10)
        assert wait_http(f"http://127.0.0.1:{port}/", timeout=5) == 200
        assert proc.rss_bytes() > 1024 * 1024
        assert proc.peak_rss_bytes() >= proc.rss_bytes()
        proc.pause()
        with pytest.raises(TimeoutError):
            wait_http(f"http://127.0.0.1:{port}/", timeout=0.5)
        proc.resume()
        assert wait_http(f"http://127.0.0.1:{port}/", timeout=5) == 200
        pid = proc.pid
    assert not proc.running
    assert proc.returncode == -signal.SIGTERM
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert wait_until(lambda: not port_open("127.0.0.1", port), timeout=2)
    assert "GET / HTTP" in proc.log_text()


def test_stop_escalates_to_sigkill_and_is_idempotent(tmp_path: Path) -> None:
    code = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    proc = Process([sys.executable, "-c", code], cwd=tmp_path).start()
    assert wait_until(lambda: "up" in proc.log_text(), timeout=5)
    assert proc.stop(timeout=0.3) == -signal.SIGKILL
    assert proc.stop() == -signal.SIGKILL
    proc.kill()


def test_wait_for_port_times_out() -> None:
    with pytest.raises(TimeoutError):
        wait_for_port("127.0.0.1", free_port(), timeout=0.2)


def test_signals_after_exit_never_reach_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    """After the leader is reaped, its pid may be reused; kill/stop must not hit the new owner."""
    proc = Process(["true"], cwd=tmp_path, name="short").start()
    proc.wait(10)
    # Stand in for the kernel reusing the pid: a live process now holds it. We cannot force the
    # kernel's choice, so point the finished Process at a live bystander in its own session.
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        proc._popen.pid = bystander.pid  # type: ignore[union-attr]
        proc.kill()
        proc.stop()
        proc.pause()
        with pytest.raises(subprocess.TimeoutExpired):
            bystander.wait(0.5)  # a stray SIGKILL would have ended it by now
        with open(f"/proc/{bystander.pid}/stat") as f:
            assert f.read().split(") ")[1].split()[0] != "T"  # not stopped
    finally:
        os.killpg(bystander.pid, signal.SIGKILL)
        bystander.wait()


def test_pause_returns_only_once_every_thread_of_the_group_is_stopped(tmp_path: Path) -> None:
    """SIGSTOP lands asynchronously; pause() must not return while a thread still runs (a test
    that expects a hung peer would otherwise get answers from it for a moment)."""
    spin = (
        "import os,sys,threading\n"
        "def busy():\n    while True: pass\n"
        "for _ in range(3): threading.Thread(target=busy, daemon=True).start()\n"
        "if os.fork() == 0:\n    busy()\n"
        "print('up', flush=True); busy()\n"
    )
    proc = Process([sys.executable, "-c", spin], cwd=tmp_path, name="spin").start()
    try:
        assert wait_until(lambda: "up" in proc.log_text(), timeout=10)
        for _ in range(5):
            proc.pause()
            states = _group_thread_states(proc.pid)
            assert len(states) >= 5  # leader's 4 threads + the forked child
            assert set(states) == {"T"}, states
            proc.resume()
            assert wait_until(lambda: "R" in _group_thread_states(proc.pid), timeout=5)
    finally:
        proc.kill()


def _group_thread_states(pgid: int) -> list[str]:
    states = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat[stat.rfind(")") + 2 :].split()[2]) != pgid:
                continue
            for tid in os.listdir(f"/proc/{entry}/task"):
                task = Path(f"/proc/{entry}/task/{tid}/stat").read_text()
                states.append(task[task.rfind(")") + 2 :].split()[0])
        except (OSError, ValueError):
            continue
    return states
