"""A real ``redis-server`` on a free loopback port, no persistence, in its own temp dir.

Guarantees: :meth:`RedisServer.start` returns once the server on its port is this child
(``INFO server`` names its pid; a raw RESP round trip, no client library needed) or raises :class:`harness.procs.ProcessError`
with the log tail; :meth:`close` stops it and removes the temp dir it created (the lifecycle is
:class:`harness.service.Service`'s).
"""

from __future__ import annotations

import socket
from pathlib import Path

from harness.ports import free_port
from harness.service import FixedPortService

REDIS_BIN = "redis-server"


class RedisServer(FixedPortService):
    """``redis-server --port P --bind 127.0.0.1 --save "" --appendonly no``.

    :meth:`start` starts (or restarts after stop/kill: same port, empty data) and waits for
    ``PING``; :meth:`kill` is redis down (connections refused until :meth:`start`),
    :meth:`pause` redis hung (connects succeed, commands never answer).
    """

    log_name = "redis.log"
    readiness = "answer PING"

    def __init__(
        self,
        *,
        workdir: str | Path | None = None,
        port: int | None = None,
        extra_args: list[str] | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            name="redis-server",
            workdir=workdir,
            temp_prefix="qs-redis-",
            start_timeout=start_timeout,
        )
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{self.host}/0"

    def argv(self) -> list[str]:
        return [
            REDIS_BIN,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--protected-mode", "no",
            *self.extra_args,
        ]  # fmt: skip

    def ready(self) -> bool:
        """Our own redis-server answers: ``INFO server`` on the port names this child's pid
        (a server another test process started on the same port, after ours lost the race
        for it and exited, must never pass for ours)."""
        if self.process is None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
                reply = b""
                while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        return False
                    reply += chunk
        except OSError:
            return False
        for line in reply.decode("utf-8", "replace").splitlines():
            if line.startswith("process_id:"):
                return line.split(":", 1)[1].strip() == str(self.process.pid)
        return False

    def ping(self) -> bool:
        """True when a raw ``PING`` gets ``+PONG`` right now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
