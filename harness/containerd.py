"""containerd (1.6, as root) as a real client: a private daemon driven through ``ctr``.

:class:`Containerd` writes a ``config.toml`` (version 2) whose ``root``, ``state``, gRPC and
ttrpc sockets all live in its own directories, disables every snapshotter but ``native`` (no
overlay/btrfs/zfs/devmapper mounts on the host) and the CRI plugin (it needs overlayfs and is
not used: mirrors are given to ``ctr`` through ``--hosts-dir``), starts ``containerd --config``
as a :class:`harness.service.Service` and waits until ``ctr version`` answers.

Mirrors: :meth:`Containerd.set_mirror` writes ``certs.d/<UPSTREAM>/hosts.toml`` exactly as a
Kubernetes node would (``server = "http://UPSTREAM"`` plus ``[host."http://MIRROR"]`` with
``capabilities = ["pull", "resolve"]``). containerd then sends every request for that upstream
to the mirror first, with ``?ns=UPSTREAM`` appended, and falls back to the upstream only when
the mirror fails.

Guarantees: :meth:`start` raises :class:`harness.procs.ProcessError` with containerd's log tail
if the daemon does not answer within ``start_timeout``; :meth:`close` stops the daemon and
deletes the directories this object created. The socket directory is a short path under
``/tmp`` (unix socket paths are limited to 107 bytes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness.procs import CommandError, ProcessError
from harness.service import Service

CONTAINERD_BIN = "containerd"
CTR_BIN = "ctr"
DEFAULT_TIMEOUT = 120.0
_DISABLED = [
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.overlayfs",
    "io.containerd.grpc.v1.cri",
]


class CtrError(CommandError):
    """``ctr`` exited non-zero or timed out; ``output`` holds what it printed."""

    message_chars = 2000


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


class Containerd(Service):
    """A private containerd daemon and its ``ctr`` client."""

    log_name = "containerd.log"
    readiness = "answer `ctr version`"
    poll_interval = 0.05

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        namespace: str = "quayside",
        start_timeout: float = 20.0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(
            name="containerd", workdir=workdir, temp_prefix="qs-ctrd-", start_timeout=start_timeout
        )
        self.sockdir = Path(tempfile.mkdtemp(prefix="qs-ctrd-sock-", dir="/tmp"))
        self.socket = self.sockdir / "c.sock"
        self.certs_d = self.workdir / "certs.d"
        self.certs_d.mkdir(exist_ok=True)
        self.config_path = self.workdir / "config.toml"
        self.namespace = namespace
        self.timeout = timeout
        self._probe_error = ""

    # -- daemon --------------------------------------------------------------------------------

    def config_text(self) -> str:
        return "\n".join([
            "version = 2",
            f"root = {_q(str(self.workdir / 'root'))}",
            f"state = {_q(str(self.sockdir / 'state'))}",
            f"disabled_plugins = {json.dumps(_DISABLED)}",
            "",
            "[grpc]",
            f"  address = {_q(str(self.socket))}",
            "[ttrpc]",
            f"  address = {_q(str(self.socket) + '.ttrpc')}",
            "[debug]",
            '  address = ""',
            "[metrics]",
            '  address = ""',
            "",
        ])  # fmt: skip

    def prepare(self) -> None:
        self.config_path.write_text(self.config_text())
        self._probe_error = ""

    def argv(self) -> list[str]:
        return [CONTAINERD_BIN, "--config", str(self.config_path)]

    def ready(self) -> bool:
        """True once the socket exists and ``ctr version`` answers."""
        if not self.socket.exists():
            return False
        try:
            self.ctr(["version"], timeout=5)
        except CtrError as exc:
            self._probe_error = str(exc)
            return False
        return True

    def failure_detail(self) -> str:
        return f"last probe: {self._probe_error or '-'}\n{super().failure_detail()}"

    def close(self) -> None:
        """Stop the daemon, delete the directories this object created. Idempotent."""
        super().close()
        shutil.rmtree(self.sockdir, ignore_errors=True)

    # -- mirrors -------------------------------------------------------------------------------

    def set_mirror(
        self,
        upstream_host: str,
        mirror_urls: Sequence[str],
        *,
        capabilities: Sequence[str] = ("pull", "resolve"),
    ) -> Path:
        """Write ``certs.d/UPSTREAM/hosts.toml`` sending pulls of ``upstream_host`` to the
        mirrors (``http://127.0.0.1:PORT``) first; return the file. ``[]`` removes mirrors."""
        folder = self.certs_d / upstream_host
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"server = {_q('http://' + upstream_host)}", ""]
        for url in mirror_urls:
            lines += [f"[host.{_q(url)}]", f"  capabilities = {json.dumps(list(capabilities))}", ""]
        path = folder / "hosts.toml"
        path.write_text("\n".join(lines))
        return path

    # -- ctr -----------------------------------------------------------------------------------

    def ctr(self, args: Sequence[str], *, timeout: float | None = None) -> str:
        """``ctr -a SOCKET -n NAMESPACE ARGS``; return stdout+stderr. Raises :class:`CtrError`."""
        cmd = [CTR_BIN, "-a", str(self.socket), "-n", self.namespace, *args]
        try:
            proc = subprocess.run(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout or self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode("utf-8", "replace") if exc.stdout else ""
            raise CtrError(cmd, None, out) from exc
        except FileNotFoundError as exc:
            raise CtrError(cmd, 127, str(exc)) from exc
        out = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0:
            raise CtrError(cmd, proc.returncode, out)
        return out

    def pull(self, ref: str, *, timeout: float | None = None) -> str:
        """``ctr images pull --hosts-dir CERTS_D --plain-http --snapshotter native REF``
        (``REF`` like ``127.0.0.1:PORT/repo:tag``); return ctr's output."""
        return self.ctr(
            ["images", "pull", "--hosts-dir", str(self.certs_d), "--plain-http",
             "--snapshotter", "native", ref],
            timeout=timeout,
        )  # fmt: skip

    def rm(self, *refs: str) -> None:
        """``ctr images rm --sync REFS``: the image and (after GC) its content are gone, so the
        next pull fetches every blob again."""
        self.ctr(["images", "rm", "--sync", *refs])

    def image_digest(self, ref: str) -> str:
        """The manifest digest containerd recorded for ``ref`` (from ``ctr images ls``)."""
        for line in self.ctr(["images", "ls"]).splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == ref:
                return fields[2]
        raise KeyError(ref)

    def content_digests(self) -> set[str]:
        """Digests in containerd's content store (``ctr content ls``)."""
        lines = self.ctr(["content", "ls", "-q"]).split()
        return {line for line in lines if line.startswith("sha256:")}


def unavailable_reason() -> str | None:
    """``None`` when containerd + ctr run here; otherwise why not (the daemon's own output)."""
    for binary in (CONTAINERD_BIN, CTR_BIN):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (make sysdeps)"
    daemon = Containerd(start_timeout=20)
    try:
        daemon.start()
    except ProcessError as exc:
        return f"containerd cannot start here: {exc}"
    finally:
        daemon.close()
    return None
