"""Machine facts and tool versions recorded with every run (no network, bounded subprocesses),
and how busy the machine was with other work while a scenario ran (:class:`CpuMeter`)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

_TOOLS: dict[str, list[str]] = {
    "docker-registry": ["docker-registry", "--version"],
    "nginx": ["nginx", "-v"],
    "redis-server": ["redis-server", "--version"],
    "skopeo": ["skopeo", "--version"],
    "wrk": ["wrk", "-v"],
}
_PACKAGES = ("quayside", "aiohttp", "uvloop", "redis", "diskcache", "matplotlib", "rich")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tool_version(cmd: list[str]) -> str:
    """First line of a tool's version output (stdout or stderr), or ``"not installed"``."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (proc.stdout or proc.stderr).strip()
    first = text.splitlines()[0] if text else ""
    return re.sub(r"\s+", " ", first)[:200]


def _git(repo: Path, *args: str) -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.rstrip() if proc.returncode == 0 else ""


def _git_commit(repo: Path) -> str:
    return _git(repo, "rev-parse", "--short", "HEAD")


def git_state(repo: Path) -> dict[str, object]:
    """The commit the code ran at, and the tracked files that differed from it (so a result
    never claims a commit whose code it did not run)."""
    changed = [
        line[3:]
        for line in _git(repo, "status", "--porcelain", "--untracked-files=no").splitlines()
    ]
    return {
        "commit": _git(repo, "rev-parse", "HEAD"),
        "short": _git_commit(repo),
        "date": _git(repo, "show", "-s", "--format=%cI", "HEAD"),
        "changed_files": [c for c in changed if not c.startswith("bench/results/")],
    }


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (other work on the machine skews every figure)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot from /proc/stat (steal counts as busy:
    another guest took it)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    total = sum(fields[:8])
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return total - idle, total


def _tree_jiffies(root: int, *, include_root: bool = True) -> int:
    """CPU jiffies of ``root`` (unless ``include_root`` is false) and every live descendant,
    each with its reaped children's (utime + stime + cutime + cstime): what this run's own
    processes have used."""
    parents: dict[int, int] = {}
    used: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        used[pid] = sum(int(x) for x in fields[11:15])
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        if pid != root or include_root:
            total += used.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


QUIET_WINDOW = 0.25  # seconds per look at the servers' CPU use
QUIET_JIFFIES = 2  # at most this much CPU (clock ticks, 10 ms each) in a window counts as quiet


def wait_quiet(timeout: float = 15.0) -> tuple[float, bool]:
    """Wait until every process this run started (servers, upstream views, load workers)
    is idle: at most :data:`QUIET_JIFFIES` of CPU over a :data:`QUIET_WINDOW`. Returns the
    seconds waited and whether they went quiet within ``timeout``.

    A timed step must not share the machine with the previous step's leftovers: the
    reference proxy fetches its second copy of a blob *after* its client got the first, and
    a cache may still write or fsync. Foreign processes do not count here (see
    :class:`CpuMeter` for those)."""
    start = time.monotonic()
    me = os.getpid()
    last = _tree_jiffies(me, include_root=False)
    while True:
        time.sleep(QUIET_WINDOW)
        now = _tree_jiffies(me, include_root=False)
        waited = time.monotonic() - start
        if now - last <= QUIET_JIFFIES:
            return waited, True
        if waited >= timeout:
            return waited, False
        last = now


class CpuMeter:
    """Share of the machine's CPU time that processes outside this run used between
    :meth:`start` and :meth:`stop` (0.0 = nothing else ran; 1.0 = all CPUs busy elsewhere)."""

    BUSY_SHARE = 0.2  # above this, other work has visibly taken CPU from the figures

    def __init__(self) -> None:
        self._start: tuple[int, int, int, list[float]] = (0, 0, 0, [])

    def start(self) -> CpuMeter:
        busy, total = _cpu_jiffies()
        self._start = (busy, total, _tree_jiffies(os.getpid()), load_average())
        return self

    def stop(self) -> dict[str, object]:
        """``{"load_before", "load_after", "foreign_cpu_share", "busy"}``."""
        busy0, total0, own0, load0 = self._start
        busy, total = _cpu_jiffies()
        own = _tree_jiffies(os.getpid())
        span = max(1, total - total0)
        foreign = max(0.0, ((busy - busy0) - (own - own0)) / span)
        return {
            "load_before": load0,
            "load_after": load_average(),
            "foreign_cpu_share": round(foreign, 3),
            "busy": foreign > self.BUSY_SHARE,
        }


def info() -> dict[str, object]:
    """CPU count and model, memory, kernel, Python, package and tool versions, git commit."""
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": _mem_total(),
        "memory_gib": round(_mem_total() / 2**30, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": packages,
        "tools": {name: tool_version(cmd) for name, cmd in _TOOLS.items()},
        "git_commit": _git_commit(Path(__file__).resolve().parent.parent),
        "git": git_state(Path(__file__).resolve().parent.parent),
        "load_average_start": load_average(),
    }
