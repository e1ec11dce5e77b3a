"""Network namespaces made by the bench and its tests: create, enter, run in, and tear down.

Everything goes through iproute2 (``ip netns ...``) and needs root. Names carry an owner:
``<prefix>-<pid>-<n>-<role>`` (``pid`` = the process that made them), so :func:`sweep` can
remove what a crashed run left behind without touching the namespaces of a run that is still
alive. Guarantees:

- :func:`unavailable` says why namespaces cannot be made here (not root, no ``ip``, the kernel
  refused) before anything is created; callers skip with that reason, never fake a result;
- :meth:`Netns.delete` first SIGKILLs every process still inside the namespace (only processes
  in a namespace this harness created, so only ours), then deletes it; it never raises and is
  idempotent;
- :meth:`Netns.entered` switches only the calling thread into the namespace (``setns``) and
  always switches it back, also when the body raises; sockets the thread opens and children it
  starts meanwhile (``subprocess``, ``multiprocessing`` spawn) live in the namespace.

Raises :class:`NetnsError` (with iproute2's message) when a command fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

PREFIX = "qsb"
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
_COUNTER = itertools.count()
_NAME = re.compile(r"^(?P<prefix>[a-z]+)-(?P<pid>\d+)-\d+-[a-z]+$")


class NetnsError(RuntimeError):
    """An ``ip`` command failed, or the kernel refused to switch namespaces."""


def ip(*args: str, timeout: float = 15.0, check: bool = True) -> str:
    """Run ``ip ARGS`` (or ``tc`` when the first argument is ``"tc"``); return its stdout.

    Raises:
        NetnsError: the command is missing, failed (``check``) or took longer than ``timeout``.
    """
    argv = list(args) if args and args[0] == "tc" else ["ip", *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_SYS_ADMIN (run the bench as root)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (iproute2; make sysdeps)"
    try:
        _libc()
    except (OSError, AttributeError) as exc:
        return f"setns(2) not reachable through libc: {exc}"
    return None


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setns  # noqa: B018 - AttributeError when the C library has no setns
    return libc


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns: {os.strerror(err)}")


def list_names() -> list[str]:
    """Every named namespace (``ip netns list``), newest first."""
    try:
        out = ip("netns", "list")
    except NetnsError:
        return []
    return [line.split()[0] for line in out.splitlines() if line.strip()]


class Netns:
    """One named network namespace; :meth:`create` makes it (with ``lo`` up)."""

    def __init__(self, role: str, *, prefix: str = PREFIX) -> None:
        if not re.fullmatch(r"[a-z]+", role) or not re.fullmatch(r"[a-z]+", prefix):
            raise ValueError("role and prefix are lowercase letters")
        self.role = role
        self.name = f"{prefix}-{os.getpid()}-{next(_COUNTER)}-{role}"
        self.created = False

    def create(self) -> Netns:
        """``ip netns add`` and bring ``lo`` up. Raises :class:`NetnsError`."""
        ip("netns", "add", self.name)
        self.created = True
        ip("-n", self.name, "link", "set", "lo", "up")
        return self

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` run inside the namespace (``ip netns exec NAME ...``, which execs, so
        the child's pid is the command's)."""
        return ["ip", "netns", "exec", self.name, *command]

    @contextlib.contextmanager
    def entered(self) -> Iterator[Netns]:
        """Switch the calling thread into the namespace for the ``with`` body."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(NETNS_DIR / self.name, os.O_RDONLY)
        except OSError as exc:
            os.close(own)
            raise NetnsError(f"namespace {self.name}: {exc}") from exc
        try:
            _setns(target)
            try:
                yield self
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)

    def pids(self) -> list[int]:
        """Processes whose network namespace is this one."""
        try:
            out = ip("netns", "pids", self.name, check=False)
        except NetnsError:
            return []
        return [int(p) for p in out.split() if p.isdigit()]

    def delete(self) -> None:
        """Kill what still runs inside, then ``ip netns del``. Never raises; idempotent."""
        delete_named(self.name)
        self.created = False

    def __repr__(self) -> str:
        return f"<Netns {self.name}>"


def delete_named(name: str) -> None:
    """Kill every process inside namespace ``name`` and delete it (never raises)."""
    if not (NETNS_DIR / name).exists():
        return
    with contextlib.suppress(NetnsError):
        for pid in ip("netns", "pids", name, check=False).split():
            if pid.isdigit():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(NetnsError):
        ip("netns", "del", name, check=False)


def sweep(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces named ``<prefix>-<pid>-...`` whose owner ``pid`` is gone (leftovers of
    a run that crashed or was killed); return their names. Live owners' namespaces stay."""
    removed = []
    for name in list_names():
        m = _NAME.match(name)
        if m is None or m["prefix"] != prefix:
            continue
        if Path(f"/proc/{m['pid']}").exists():
            continue
        delete_named(name)
        removed.append(name)
    return removed
