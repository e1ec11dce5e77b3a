"""podman (4.3, as root) as a real client, confined to one temp directory.

Everything podman keeps lives under ``workdir``: vfs storage (``graph/``, ``run/``), its temp
dir, the events log, and the three config files it is pointed at through
``CONTAINERS_STORAGE_CONF``, ``CONTAINERS_CONF`` and ``CONTAINERS_REGISTRIES_CONF``. The host's
``/var/lib/containers`` is never touched. No daemon: every call is one ``podman`` process with
a wall-clock timeout.

Mirrors: :meth:`Podman.configure` writes ``registries.conf`` with one ``[[registry]]`` for the
upstream host (plain HTTP) and its ``[[registry.mirror]]`` entries, so ``podman pull
UPSTREAM/repo:tag`` asks the mirrors first (by tag too: ``mirror-by-digest-only`` stays false)
and falls back to the upstream only when every mirror fails. podman sends no ``?ns=``.

:func:`unavailable_reason` runs a real ``podman info`` in a throwaway directory and returns
podman's own error text when it cannot work on this machine (``None`` when it can).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.procs import CommandError

PODMAN_BIN = "podman"
DEFAULT_TIMEOUT = 120.0


class PodmanError(CommandError):
    """podman exited non-zero or timed out; ``stderr`` holds its message."""

    @property
    def stderr(self) -> str:
        return self.output


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


class Podman:
    """One isolated podman installation (storage + configs) under ``workdir``."""

    def __init__(self, workdir: str | Path | None = None, *, timeout: float = DEFAULT_TIMEOUT):
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="qs-podman-"))
        )
        self.timeout = timeout
        for sub in ("graph", "run", "tmp"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.storage_conf = self.workdir / "storage.conf"
        self.containers_conf = self.workdir / "containers.conf"
        self.registries_conf = self.workdir / "registries.conf"
        self.storage_conf.write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f"graphroot = {_toml_str(str(self.workdir / 'graph'))}\n"
            f"runroot = {_toml_str(str(self.workdir / 'run'))}\n"
        )
        self.containers_conf.write_text(
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f"events_logfile_path = {_toml_str(str(self.workdir / 'events.log'))}\n"
            f"tmp_dir = {_toml_str(str(self.workdir / 'tmp'))}\n"
        )
        self.configure(None)

    # -- configuration -------------------------------------------------------------------------

    def configure(self, upstream_host: str | None, mirrors: Sequence[str] = ()) -> None:
        """Write ``registries.conf``: ``upstream_host`` (``127.0.0.1:PORT``) plain HTTP, and each
        mirror (``host:port`` or ``host:port/path-prefix``) as an insecure ``[[registry.mirror]]``.
        ``None``: no registry entries (only ``unqualified-search-registries = []``)."""
        lines = ["unqualified-search-registries = []", ""]
        if upstream_host is not None:
            lines += [
                "[[registry]]",
                f"prefix = {_toml_str(upstream_host)}",
                f"location = {_toml_str(upstream_host)}",
                "insecure = true",
                "",
            ]
            for mirror in mirrors:
                lines += [
                    "[[registry.mirror]]",
                    f"location = {_toml_str(mirror)}",
                    "insecure = true",
                    "",
                ]
        self.registries_conf.write_text("\n".join(lines))

    def env(self) -> dict[str, str]:
        """The environment every podman call gets (configs, TMPDIR)."""
        env = dict(os.environ)
        env.update(
            CONTAINERS_STORAGE_CONF=str(self.storage_conf),
            CONTAINERS_CONF=str(self.containers_conf),
            CONTAINERS_REGISTRIES_CONF=str(self.registries_conf),
            TMPDIR=str(self.workdir / "tmp"),
        )
        return env

    # -- commands ----------------------------------------------------------------------------

    def run(self, args: Sequence[str], *, timeout: float | None = None) -> str:
        """``podman ARGS``; return stdout. Raises :class:`PodmanError` (stderr attached)."""
        cmd = [PODMAN_BIN, *args]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                timeout=timeout or self.timeout,
                env=self.env(),
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode("utf-8", "replace") if exc.stderr else ""
            raise PodmanError(cmd, None, stderr) from exc
        except FileNotFoundError as exc:
            raise PodmanError(cmd, 127, str(exc)) from exc
        if proc.returncode != 0:
            raise PodmanError(cmd, proc.returncode, proc.stderr.decode("utf-8", "replace"))
        return proc.stdout.decode("utf-8", "replace")

    def pull(self, ref: str, *, timeout: float | None = None) -> str:
        """``podman pull --tls-verify=false REF``; return the image ID podman prints."""
        out = self.run(["pull", "--tls-verify=false", ref], timeout=timeout)
        return out.strip().splitlines()[-1] if out.strip() else ""

    def rmi(self, *refs: str) -> None:
        """``podman rmi --force REFS`` (the layers go too: the next pull fetches them again)."""
        self.run(["rmi", "--force", *refs])

    def inspect(self, ref: str) -> dict[str, Any]:
        """``podman image inspect`` of one image."""
        return json.loads(self.run(["image", "inspect", ref]))[0]

    def image_digest(self, ref: str) -> str:
        """The manifest digest podman recorded for ``ref`` (``sha256:...``)."""
        return str(self.inspect(ref)["Digest"])

    def images(self) -> list[dict[str, Any]]:
        return json.loads(self.run(["images", "--format", "json"]) or "[]")

    # -- teardown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Delete the storage and configs this object created. Idempotent."""
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Podman:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def unavailable_reason() -> str | None:
    """``None`` when podman can run here; otherwise why not (podman's own error text)."""
    if shutil.which(PODMAN_BIN) is None:
        return "podman is not installed (make sysdeps)"
    with tempfile.TemporaryDirectory(prefix="qs-podman-probe-") as tmp:
        podman = Podman(tmp, timeout=60)
        try:
            podman.run(["info", "--format", "json"])
        except PodmanError as exc:
            return f"podman info fails here: {exc}"
    return None
