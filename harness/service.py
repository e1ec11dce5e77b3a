"""One real server as a child process: the lifecycle every launcher in harness/ shares.

A :class:`Service` owns a work dir (a temp dir it creates, or one the caller passes in), runs one
:class:`harness.procs.Process` there with its log in that dir, and polls :meth:`Service.ready`
until the server answers. A subclass says what to run (:meth:`Service.argv`, after
:meth:`Service.prepare` wrote its config files) and how to tell that it is up
(:meth:`Service.ready`). Two address flavours build on it:

- :class:`FixedPortService`: the port is picked before the start (``free_port()``) and kept
  across restarts; ``host`` and ``url`` follow from it.
- :class:`ListeningLineService`: the child binds port 0 (or a given port) and prints a JSON
  ``{"event": "listening", "url": ...}`` line; ``url`` is read from that line.

Guarantees:

- :meth:`Service.start` returns once :meth:`Service.ready` is true. When the child exits first,
  or ``start_timeout`` s pass, it kills the child and raises
  :class:`harness.procs.ProcessError` naming the command line and carrying the log tail.
- :meth:`Service.start` on a started, running service is a no-op; after :meth:`Service.stop` /
  :meth:`Service.kill` it starts a new child in the same work dir.
- :meth:`Service.stop`, :meth:`Service.kill`, :meth:`Service.pause` and :meth:`Service.resume`
  do nothing before the first start; stop and kill are idempotent.
- :meth:`Service.close` stops the child and deletes the work dir only when this object created
  it (never a directory passed in by the caller). Idempotent. ``with`` starts and closes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from harness.procs import Process, ProcessError


class Service:
    """Base launcher: subclasses set the class attributes and implement :meth:`argv` and
    :meth:`ready` (and :meth:`prepare` when they write config files)."""

    #: File name of the child's stdout+stderr log inside the work dir.
    log_name: ClassVar[str] = "service.log"
    #: What :meth:`ready` waits for, in words (for the start failure message).
    readiness: ClassVar[str] = "become ready"
    #: Seconds between two :meth:`ready` probes during a start.
    poll_interval: ClassVar[float] = 0.02
    #: Default grace period of :meth:`stop` between SIGTERM and SIGKILL.
    stop_timeout: ClassVar[float] = 5.0
    #: Whether :meth:`rss_bytes` / :meth:`peak_rss_bytes` sum the whole process group.
    group_memory: ClassVar[bool] = False

    def __init__(
        self,
        *,
        name: str,
        workdir: str | Path | None = None,
        temp_prefix: str = "qs-service-",
        start_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix=temp_prefix))
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self.process: Process | None = None
        self._ready = False

    # -- subclass hooks --------------------------------------------------------------------

    def prepare(self) -> None:
        """Called before each launch (write config files). Default: nothing."""

    def argv(self) -> list[str]:
        """The child's full command line."""
        raise NotImplementedError

    def process_env(self) -> Mapping[str, str] | None:
        """Variables added to the inherited environment of the child. Default: none."""
        return None

    def ready(self) -> bool:
        """One probe: True when the server answers right now. Must not block for long."""
        raise NotImplementedError

    def failure_detail(self) -> str:
        """What a start failure message shows after the command line. Default: the log tail."""
        return self.process.log_tail() if self.process is not None else ""

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        """The child's stdout+stderr log."""
        return self.workdir / self.log_name

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def start(self) -> Self:
        """Start (or restart) the child and wait until it is ready (see the module doc).

        Raises:
            ProcessError: the child could not start, exited, or was not ready in time.
        """
        self.launch()
        return self.wait_ready()

    def launch(self) -> Self:
        """Start the child without waiting (then :meth:`wait_ready`), so that several servers
        can start in parallel. A no-op while the child runs."""
        if self.running:
            return self
        self.prepare()
        self._ready = False
        self.process = Process(
            self.argv(),
            env=self.process_env(),
            cwd=self.workdir,
            log_path=self.log_path,
            name=self.name,
        ).start()
        return self

    def wait_ready(self) -> Self:
        """Poll :meth:`ready` until true; a no-op once it was true for the current child.

        Raises:
            ProcessError: not launched; or the child exited or stayed unready for
                ``start_timeout`` s (the child is then killed; the message has the command
                line and :meth:`failure_detail`).
        """
        if self.process is None:
            raise ProcessError(f"{self.name} not launched")
        if self._ready:
            return self
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.ready():
                self._ready = True
                return self
            if not self.process.running or time.monotonic() >= deadline:
                break
            time.sleep(self.poll_interval)
        exited = self.process.returncode
        why = f"exited with {exited}" if exited is not None else f"{self.start_timeout:g} s passed"
        detail = self.failure_detail()
        self.process.kill()
        raise ProcessError(
            f"{self.name} did not {self.readiness} ({why}):\n"
            f"{' '.join(self.process.args)}\n{detail}"
        )

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to ``timeout`` s (default :attr:`stop_timeout`), then SIGKILL.
        Returns the exit code (None before the first start). Idempotent."""
        if self.process is None:
            return None
        return self.process.stop(self.stop_timeout if timeout is None else timeout)

    def kill(self) -> None:
        """SIGKILL the process group (a crash: no cleanup code runs)."""
        if self.process is not None:
            self.process.kill()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but never answered (a hung peer)."""
        if self.process is not None:
            self.process.pause()

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.process is not None:
            self.process.resume()

    def close(self) -> None:
        """Stop and delete the work dir this object created. Idempotent."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- observation -----------------------------------------------------------------------

    def log_text(self) -> str:
        """The current child's whole log ("" before the first start)."""
        return self.process.log_text() if self.process is not None else ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the current child's log."""
        return self.process.log_tail(lines) if self.process is not None else ""

    def rss_bytes(self) -> int:
        """Resident memory now (0 when not running); the group's sum if :attr:`group_memory`."""
        if self.process is None or not self.process.running:
            return 0
        return self.process.rss_bytes(group=self.group_memory)

    def peak_rss_bytes(self) -> int:
        """Peak resident memory (VmHWM; 0 when not running)."""
        if self.process is None or not self.process.running:
            return 0
        return self.process.peak_rss_bytes(group=self.group_memory)


class FixedPortService(Service):
    """A service listening on ``127.0.0.1:port``, the port chosen up front and kept across
    restarts: a subclass's ``__init__`` sets ``self.port = port or free_port()``."""

    port: int

    #: URL scheme of :attr:`url`.
    scheme: ClassVar[str] = "http"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``SCHEME://127.0.0.1:PORT``."""
        return f"{self.scheme}://{self.host}"


def listening_url(log_text: str) -> str | None:
    """The ``url`` of the first ``{"event": "listening"}`` JSON line in ``log_text``."""
    for line in log_text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "listening" and event.get("url"):
            return str(event["url"])
    return None


class ListeningLineService(Service):
    """A service that announces its URL in a ``{"event": "listening", "url": ...}`` log line;
    :attr:`url` is ``""`` from each launch until that line appeared."""

    readiness = "print its listening line"
    url: str = ""

    def launch(self) -> Self:
        if not self.running:
            self.url = ""
        return super().launch()

    def ready(self) -> bool:
        if self.url:
            return True
        assert self.process is not None
        url = listening_url(self.process.log_text())
        if url is None:
            return False
        self.url = url.rstrip("/")
        return True

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` of the current (or last) run."""
        return self.url.split("//", 1)[1]

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])
