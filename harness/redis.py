"""A real ``redis-server`` on a free loopback port, no persistence, in its own temp dir.

Guarantees: :meth:`RedisServer.start` returns once the server answers ``PING`` (checked with a
raw RESP round trip, no client library needed) or raises :class:`harness.procs.ProcessError`
with the log tail; :meth:`close` stops it and removes the temp dir it created.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType

from harness.ports import free_port
from harness.procs import Process, ProcessError

REDIS_BIN = "redis-server"


class RedisServer:
    """``redis-server --port P --bind 127.0.0.1 --save "" --appendonly no``."""

    def __init__(
        self,
        *,
        workdir: str | Path | None = None,
        port: int | None = None,
        extra_args: list[str] | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="qs-redis-"))
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.start_timeout = start_timeout
        self.log_path = self.workdir / "redis.log"
        self.process: Process | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{self.host}/0"

    def start(self) -> RedisServer:
        """Start (or restart after stop/kill, same port, empty data) and wait for PING."""
        if self.process is not None and self.process.running:
            return self
        args = [
            REDIS_BIN,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--protected-mode", "no",
            *self.extra_args,
        ]  # fmt: skip
        self.process = Process(
            args, cwd=self.workdir, log_path=self.log_path, name="redis-server"
        ).start()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.ping():
                return self
            if not self.process.running:
                break
            time.sleep(0.02)
        tail = self.process.log_tail()
        self.process.kill()
        raise ProcessError(f"redis-server did not answer PING on {self.host}:\n{tail}")

    def ping(self) -> bool:
        """True when a raw ``PING`` gets ``+PONG`` right now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """SIGKILL (redis down: connections refused until :meth:`start`)."""
        if self.process is not None:
            self.process.kill()

    def pause(self) -> None:
        """SIGSTOP (redis hung: connects succeed, commands never answer)."""
        if self.process is not None:
            self.process.pause()

    def resume(self) -> None:
        if self.process is not None:
            self.process.resume()

    def close(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
