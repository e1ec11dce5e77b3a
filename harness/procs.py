"""A real child process for tests and benchmarks: start, log to a file, pause, stop, measure.

Guarantees:
- The child runs in its own session/process group, so signals reach helpers it forks (nginx
  workers) and a stray child never outlives :meth:`Process.stop` / :meth:`Process.kill`.
- stdout and stderr go (interleaved, unbuffered by us) to one log file, readable any time with
  :meth:`Process.log_text`, so a failing test can print it.
- :meth:`stop` and :meth:`kill` are idempotent and never raise for an already-dead child; the
  context manager always stops the child, also when the body raised.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar

# Every started child, so a test session can reap what a failing or careless test left running
# (see harness.fixtures). A test harness convenience, not something app code does.
_STARTED: list[Process] = []


def running_processes() -> list[Process]:
    """Children started through :class:`Process` that are still alive."""
    _STARTED[:] = [p for p in _STARTED if p.running]
    return list(_STARTED)


def _stat_fields(path: str) -> list[str] | None:
    """Fields of a /proc stat file after the ``(comm)`` field (state first), or None if gone."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def group_threads_running(pgid: int) -> list[int]:
    """Thread ids in process group ``pgid`` that are not stopped (state other than T/t, Z, X)."""
    running: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(f"/proc/{entry}/stat")
        if fields is None or int(fields[2]) != pgid:  # state, ppid, pgrp
            continue
        try:
            tids = os.listdir(f"/proc/{entry}/task")
        except OSError:
            continue
        for tid in tids:
            task = _stat_fields(f"/proc/{entry}/task/{tid}/stat")
            if task is not None and task[0] not in ("T", "t", "Z", "X"):
                running.append(int(tid))
    return running


class ProcessError(RuntimeError):
    """A child could not start, or died while it was expected to run (message has its log tail)."""


class CommandError(RuntimeError):
    """A command-line tool exited non-zero (``returncode``) or timed out (``returncode`` None);
    ``output`` is what it printed; the message ends with its last :attr:`message_chars`."""

    message_chars: ClassVar[int | None] = None

    def __init__(self, args: Sequence[str], returncode: int | None, output: str) -> None:
        self.args_ = list(args)
        self.returncode = returncode
        self.output = output
        what = "timed out" if returncode is None else f"exited {returncode}"
        text = output.strip()
        if self.message_chars is not None:
            text = text[-self.message_chars :]
        super().__init__(f"{' '.join(self.args_)} {what}: {text}")


class Process:
    """Wrapper around :class:`subprocess.Popen` with signal helpers and memory readings."""

    def __init__(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        inherit_env: bool = True,
    ) -> None:
        self.args = [os.fspath(a) for a in args]
        self.name = name or Path(self.args[0]).name
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self.env: dict[str, str] = dict(os.environ) if inherit_env else {}
        if env:
            self.env.update(env)
        if log_path is None:
            fd, tmp = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log", dir=self.cwd)
            os.close(fd)
            log_path = tmp
        self.log_path = Path(log_path)
        self._popen: subprocess.Popen[bytes] | None = None
        self._paused = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Process:
        """Start the child (once). Raises :class:`ProcessError` if the executable is missing."""
        if self._popen is not None:
            raise ProcessError(f"{self.name} already started")
        with open(self.log_path, "ab", buffering=0) as log:
            try:
                self._popen = subprocess.Popen(
                    self.args,
                    env=self.env,
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProcessError(f"cannot start {self.args!r}: {exc}") from exc
        _STARTED.append(self)
        return self

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise ProcessError(f"{self.name} not started")
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def check_running(self) -> None:
        """Raise :class:`ProcessError` (with the log tail) if the child has exited."""
        if not self.running:
            raise ProcessError(
                f"{self.name} exited with {self.returncode}; log tail:\n{self.log_tail()}"
            )

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit; raises :class:`subprocess.TimeoutExpired` after ``timeout``."""
        if self._popen is None:
            raise ProcessError(f"{self.name} not started")
        return self._popen.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL. Idempotent.

        A paused child is continued so it can handle SIGTERM. Returns the exit code.
        """
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            self._signal_group(signal.SIGCONT)
            self._paused = False
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> int | None:
        """SIGKILL the whole process group and reap the leader. Idempotent."""
        if self._popen is None:
            return None
        self._signal_group(signal.SIGKILL)
        self._paused = False
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(5.0)
        return self._popen.returncode

    def pause(self, timeout: float = 5.0) -> None:
        """SIGSTOP the process group: sockets stay open, nothing answers (a hung peer).

        Returns once every thread of every process in the group is stopped: SIGSTOP is
        delivered asynchronously, and a thread still running for a moment after ``killpg``
        answered requests a test expected to hang (its stale-serve tests flaked under load).
        Raises :class:`ProcessError` if the group is not stopped within ``timeout`` s.
        """
        self._signal_group(signal.SIGSTOP)
        self._paused = True
        if self._popen is None or self._popen.poll() is not None:
            return
        deadline = time.monotonic() + timeout
        while True:
            running = group_threads_running(self._popen.pid)
            if not running:
                return
            if time.monotonic() > deadline:
                raise ProcessError(f"{self.name}: threads {running} still running after SIGSTOP")
            time.sleep(0.002)

    def resume(self) -> None:
        """SIGCONT the process group after :meth:`pause`."""
        self._signal_group(signal.SIGCONT)
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the leader only (e.g. SIGHUP for a reload)."""
        if self.running:
            assert self._popen is not None
            self._popen.send_signal(sig)

    def _signal_group(self, sig: int) -> None:
        """Signal the child's process group, never someone else's.

        Once the leader has been reaped its pid is free: the kernel may give it to an unrelated
        new process, which (started in a new session, as ours are) leads a group with that very
        id. Leftover members of our group keep the id reserved, and while they live no new
        process can get it; so after the leader is reaped a live process *with that pid* means
        the id was reused, and the group is left alone. (Signalling it anyway stopped and
        killed other tests' servers under parallel runs.)
        """
        if self._popen is None:
            return
        pgid = self._popen.pid
        if self._popen.poll() is not None and os.path.exists(f"/proc/{pgid}"):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    # -- observation -----------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything the child wrote to stdout/stderr so far (decoded leniently)."""
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def group_pids(self) -> list[int]:
        """PIDs of every live process in the child's process group (leader first)."""
        if not self.running:
            return []
        pgid = self.pid
        pids = [pgid]
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == pgid:
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 2 and int(fields[2]) == pgid:
                pids.append(int(entry.name))
        return pids

    def rss_bytes(self, *, group: bool = False) -> int:
        """Current resident set size (VmRSS) of the leader, or summed over the group."""
        pids = self.group_pids() if group else [self.pid]
        return sum(_status_kib(pid, "VmRSS") for pid in pids) * 1024

    def peak_rss_bytes(self, *, group: bool = False) -> int:
        """Peak resident set size (VmHWM) of the leader, or summed over the group."""
        pids = self.group_pids() if group else [self.pid]
        return sum(_status_kib(pid, "VmHWM") for pid in pids) * 1024

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> Process:
        if self._popen is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = (
            "not started" if self._popen is None else f"pid={self._popen.pid} rc={self.returncode}"
        )
        return f"<Process {self.name} {state}>"


def _status_kib(pid: int, key: str) -> int:
    """Read ``key`` (kB) from /proc/<pid>/status; 0 when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02
) -> bool:
    """Poll ``predicate()`` until truthy or ``timeout``; return whether it became truthy."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
