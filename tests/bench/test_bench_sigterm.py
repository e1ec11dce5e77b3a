"""``quayside bench`` stopped by SIGTERM cleans up as it does on Ctrl-C (real processes, no mocks).

The bench runs as a child of this test (``quayside bench`` and ``python -m bench``, from this
interpreter, i.e. the worktree's .venv) with a small ``--quick`` scenario set that starts real
servers. Once its servers are up (seen in /proc: its descendants, among them the servers it
starts in their own sessions), the test sends SIGTERM and checks that the run exits with 143
within 60 s, that every process of its tree (collected before the signal) is gone, that its
temp work dir (``qs-bench-*``, found through the servers' cwd) is removed and that the partial
results were written (``complete: false``, ``interrupted: true``, ``terminated: SIGTERM``).
SIGHUP takes the same way out (129). The WAN variant (root, ``ip netns`` usable) also checks
that the run's ``qsb-<pid>-*`` namespaces are deleted. Every wait is bounded; nothing retried.
Whatever the run leaves behind when the fix is missing is killed by the test afterwards.

The last two tests send real signals to this process to check :mod:`bench.stopping` itself: a
signal during a teardown is raised after it, and only the first signal raises.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import stopping
from harness import netns

pytestmark = [pytest.mark.timeout(150)]

_needs_registry = pytest.mark.skipif(
    shutil.which("docker-registry") is None, reason="docker-registry not installed (make sysdeps)"
)

_READY_TIMEOUT = 60.0  # s from the start until the run's servers are up
_EXIT_TIMEOUT = 60.0  # s from the signal until the run exited
_GONE_TIMEOUT = 10.0  # s after the exit for reparented descendants to go


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, starttime)`` of ``pid``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root`` (also in other sessions): pid -> starttime."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] != "Z":
                children.setdefault(st[1], []).append((int(entry), st[2]))
    out: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            if pid not in out:
                out[pid] = start
                todo.append(pid)
    return out


def _alive(pids: dict[int, int]) -> dict[int, str]:
    """Those of ``pids`` still running (same start time, not a zombie): pid -> command line."""
    out = {}
    for pid, start in pids.items():
        st = _stat(pid)
        if st is not None and st[0] != "Z" and st[2] == start:
            out[pid] = _cmdline(pid)
    return out


def _wait(predicate: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def _workdir(pids: dict[int, int]) -> Path | None:
    """The run's ``qs-bench-*`` temp dir: where its servers run (their cwd is inside it)."""
    for pid in pids:
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
        for parent in (cwd, *cwd.parents):
            if parent.name.startswith("qs-bench-"):
                return parent
    return None


def _own_namespaces(pid: int) -> set[str]:
    return {n for n in netns.list_names() if n.startswith(f"{netns.PREFIX}-{pid}-")}


class _Run:
    """The bench as a child of this test; :meth:`cleanup` kills whatever it left behind."""

    def __init__(self, argv: list[str], out: Path) -> None:
        self.out = out
        self.log = out.parent / "bench-output.log"
        self.seen: dict[int, int] = {}
        self.workdir: Path | None = None
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a signal to it reaches the bench only, as `kill` does
                env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
            )

    def tree(self) -> dict[int, int]:
        """The run's live descendants now (remembered for :meth:`cleanup`)."""
        found = _descendants(self.proc.pid)
        self.seen.update(found)
        return found

    def wait_for(self, *commands: str) -> dict[int, int]:
        """Wait until a descendant runs each of ``commands`` (substrings of command lines)."""

        def up() -> dict[int, int] | None:
            if self.proc.poll() is not None:
                pytest.fail(f"the bench exited early ({self.proc.returncode}):\n{self.output()}")
            tree = self.tree()
            lines = [_cmdline(p) for p in tree]
            return tree if all(any(c in line for line in lines) for c in commands) else None

        tree = _wait(up, _READY_TIMEOUT)
        assert tree, f"no {commands} among the bench's processes:\n{self.output()}"
        return tree

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def cleanup(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        for pid in _alive(self.seen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for name in _own_namespaces(self.proc.pid):
            netns.delete_named(name)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[list[str]], _Run]]:
    runs: list[_Run] = []

    def _start(argv: list[str]) -> _Run:
        run = _Run(
            [*argv, "--quick", "--no-latest", "--out", str(tmp_path / "out")], tmp_path / "out"
        )
        runs.append(run)
        return run

    yield _start
    for run in runs:
        run.cleanup()


def _stop_and_check(run: _Run, tree: dict[int, int], sig: int, status: int) -> dict[str, Any]:
    """Send ``sig``; check the exit status, the tree and the work dir; return results.json."""
    workdir = run.workdir = _workdir(tree)
    assert workdir is not None and workdir.is_dir(), [_cmdline(p) for p in tree]
    tree = run.tree()  # everything alive right before the signal
    os.kill(run.proc.pid, sig)
    try:
        rc = run.proc.wait(_EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {_EXIT_TIMEOUT:.0f} s after {sig!r}:\n{run.output()}")
    output = run.output()
    assert rc == status, f"exit status {rc}, not {status}:\n{output}"
    assert "terminated" in output and "interrupted" not in output, output
    _wait(lambda: not _alive(tree), _GONE_TIMEOUT)
    left = _alive(tree)
    assert not left, f"left running after {sig!r}: {left}"
    assert not workdir.exists(), f"{workdir} left behind: {os.listdir(workdir)}"
    results = json.loads((run.out / "results.json").read_text())
    assert f"(stopped by {signal.Signals(sig).name})" in (run.out / "results.md").read_text()
    assert results["complete"] is False and results["interrupted"] is True
    assert results["terminated"] == signal.Signals(sig).name
    return results


@pytest.mark.slow
@_needs_registry
def test_sigterm_stops_every_server_removes_the_workdir_and_keeps_partial_results(
    start: Callable[[list[str]], _Run],
) -> None:
    run = start(
        [sys.executable, "-m", "quayside", "bench", "--scenario", "cold_blob",
         "--contender", "quayside-1", "direct"]
    )  # fmt: skip
    # the topology is up (the edge, the upstream and its views, the load generator's worker)
    # and cold_blob runs: it started its own view of the upstream for the relay floor
    tree = run.wait_for("quayside edge serve", "spawn_main", "upstream-floor/config.json")
    results = _stop_and_check(run, tree, signal.SIGTERM, 128 + signal.SIGTERM)
    assert "cold_blob" in results["scenarios"]  # the scenario that was running is reported
    assert "quayside-1" in results["contenders"]


@pytest.mark.slow
@_needs_registry
def test_sighup_takes_the_same_way_out(start: Callable[[list[str]], _Run]) -> None:
    run = start([sys.executable, "-m", "bench", "--scenario", "cold_blob", "--contender", "direct"])
    # signalled earlier this time: while the load generator's worker is starting
    tree = run.wait_for("docker-registry serve", "spawn_main")
    _stop_and_check(run, tree, signal.SIGHUP, 128 + signal.SIGHUP)


def _wan_unavailable() -> str | None:
    reason = netns.unavailable()
    if reason is not None:
        return reason
    probe = netns.Netns("probe")
    try:
        probe.create()
    except netns.NetnsError as exc:
        return f"ip netns does not work here: {exc}"
    finally:
        probe.delete()
    return None


@pytest.mark.slow
@_needs_registry
def test_sigterm_in_the_wan_phase_deletes_its_namespaces(
    start: Callable[[list[str]], _Run],
) -> None:
    reason = _wan_unavailable()
    if reason is not None:
        pytest.skip(reason)
    run = start(
        [sys.executable, "-m", "bench", "--scenario", "wan_link", "--contender", "direct"]
    )  # fmt: skip
    # the relays run in the upstream namespace, the load generator's workers in the region
    tree = run.wait_for("harness.wanrelay", "docker-registry serve", "spawn_main")
    names = _own_namespaces(run.proc.pid)
    assert len(names) == 2, names
    results = _stop_and_check(run, tree, signal.SIGTERM, 128 + signal.SIGTERM)
    assert not _own_namespaces(run.proc.pid) and not names & set(netns.list_names())
    assert set(results["wan"]["link"]["namespaces"]) == names


# -- bench.stopping in this process (real signals to ourselves) ----------------------------------


def _deliver(sig: int) -> None:
    """Send ``sig`` to this process and give the main thread the moment to run its handler."""
    os.kill(os.getpid(), sig)
    for _ in range(50):
        time.sleep(0.002)


def test_a_signal_during_a_teardown_is_raised_when_the_teardown_is_done() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    done = []
    with pytest.raises(stopping.Terminated) as info, stopping.terminate_like_ctrl_c():
        with stopping.teardown():
            _deliver(signal.SIGTERM)
            done.append("teardown finished")
            assert stopping.received() == "SIGTERM"
    assert done == ["teardown finished"]
    assert isinstance(info.value, KeyboardInterrupt) and info.value.exit_status == 143
    assert signal.getsignal(signal.SIGTERM) == previous and stopping.received() is None


def test_only_the_first_signal_raises_so_the_cleanup_is_not_cut_short() -> None:
    previous = signal.getsignal(signal.SIGHUP)
    cleaned = []
    with pytest.raises(stopping.Terminated) as info, stopping.terminate_like_ctrl_c():
        try:
            _deliver(signal.SIGHUP)
            pytest.fail("SIGHUP did not raise")
        finally:
            _deliver(signal.SIGTERM)  # e.g. systemd signalling the whole cgroup
            cleaned.append("cleanup finished")
    assert cleaned == ["cleanup finished"]
    assert info.value.name == "SIGHUP" and info.value.exit_status == 129
    assert signal.getsignal(signal.SIGHUP) == previous
