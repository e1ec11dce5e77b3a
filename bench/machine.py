"""Machine facts and tool versions recorded with every run (no network, bounded subprocesses)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
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


def _git_commit(repo: Path) -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip()


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (other work on the machine skews every figure)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


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
        "load_average_start": load_average(),
    }
