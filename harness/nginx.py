"""nginx as a baseline contender: a caching reverse proxy, or a plain static file server.

Both modes run ``nginx -p PREFIX -c CONF -e ERRORLOG -g 'daemon off;'`` with everything (config,
pid, logs, temp and cache dirs) in one work dir, listening on ``127.0.0.1:<free port>``.

- :meth:`Nginx.proxy`: ``/v2/`` proxied to an upstream registry with ``proxy_cache`` (key
  ``$scheme$proxy_host$request_uri``), ``proxy_cache_lock on`` (one upstream fill per key; the
  others wait), ``proxy_cache_valid 200 206 <ttl>``, ``proxy_buffering on``, a large
  ``max_size``; the access log's extra field is ``cache=$upstream_cache_status`` and responses
  carry ``X-Cache-Status``.
- :meth:`Nginx.static`: a directory served at a URL prefix with ``sendfile on`` (the "loopback
  limit" a server cannot beat).

Running as root, workers run as root too (``user root;``) so they can use the private temp dir.
:meth:`start` returns once the port accepts connections or raises
:class:`harness.procs.ProcessError` with nginx's error log.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from harness.accesslog import AccessLog, AccessRecord
from harness.ports import free_port, wait_for_port
from harness.procs import Process, ProcessError

NGINX_BIN = "nginx"

_LOG_FORMAT = (
    'log_format qs \'$remote_addr - $remote_user [$time_local] "$request" $status '
    '$body_bytes_sent "$http_referer" "$http_user_agent" cache=$upstream_cache_status\';'
)


class Nginx:
    """One nginx instance; build with :meth:`proxy` or :meth:`static`, then :meth:`start`."""

    def __init__(
        self,
        server_block: str,
        http_extra: str = "",
        *,
        workdir: str | Path | None = None,
        port: int | None = None,
        workers: int | str = 1,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="qs-nginx-"))
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.workers = workers
        self._server_block = server_block
        self._http_extra = http_extra
        self.conf_path = self.workdir / "nginx.conf"
        self.access_log_path = self.workdir / "access.log"
        self.error_log_path = self.workdir / "error.log"
        self.cache_dir = self.workdir / "cache"
        self.access = AccessLog(self.access_log_path)
        self.process: Process | None = None

    # -- constructors ------------------------------------------------------------------

    @classmethod
    def proxy(
        cls,
        upstream_url: str,
        *,
        workdir: str | Path | None = None,
        port: int | None = None,
        workers: int | str = 1,
        cache_valid: str = "7d",
        max_size: str = "100g",
        lock_timeout: str = "600s",
    ) -> Nginx:
        """Caching reverse proxy for ``/v2/`` in front of ``upstream_url`` (``http://host:port``)."""
        upstream = upstream_url.rstrip("/")
        block = f"""
        location /v2/ {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
            proxy_cache qs;
            proxy_cache_key $scheme$proxy_host$request_uri;
            proxy_cache_methods GET HEAD;
            proxy_cache_lock on;
            proxy_cache_lock_timeout {lock_timeout};
            proxy_cache_lock_age {lock_timeout};
            proxy_cache_valid 200 206 {cache_valid};
            proxy_ignore_headers Cache-Control Expires Set-Cookie;
            proxy_read_timeout 600s;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
        location / {{ return 404; }}
"""
        inst = cls(block, workdir=workdir, port=port, workers=workers)
        inst._http_extra = (
            f"proxy_cache_path {inst.cache_dir} levels=1:2 keys_zone=qs:32m "
            f"max_size={max_size} inactive=30d use_temp_path=off;"
        )
        return inst

    @classmethod
    def static(
        cls,
        directory: str | Path,
        *,
        url_prefix: str = "/",
        workdir: str | Path | None = None,
        port: int | None = None,
        workers: int | str = 1,
    ) -> Nginx:
        """Serve ``directory`` at ``url_prefix`` (``/files/x`` → ``directory/x``) with sendfile."""
        prefix = "/" + url_prefix.strip("/")
        prefix = prefix if prefix == "/" else prefix + "/"
        root = str(Path(directory).resolve()).rstrip("/") + "/"
        block = f"""
        location {prefix} {{
            alias {root};
            sendfile on;
            tcp_nopush on;
            default_type application/octet-stream;
        }}
"""
        return cls(block, workdir=workdir, port=port, workers=workers)

    # -- addresses ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # -- lifecycle ---------------------------------------------------------------------

    def render_config(self) -> str:
        w = self.workdir
        user = "user root root;" if os.geteuid() == 0 else ""
        return f"""{user}
worker_processes {self.workers};
pid {w}/nginx.pid;
error_log {self.error_log_path} info;
events {{ worker_connections 4096; }}
http {{
    types {{ }}
    default_type application/octet-stream;
    {_LOG_FORMAT}
    access_log {self.access_log_path} qs;
    client_body_temp_path {w}/tmp-body;
    proxy_temp_path {w}/tmp-proxy;
    fastcgi_temp_path {w}/tmp-fastcgi;
    uwsgi_temp_path {w}/tmp-uwsgi;
    scgi_temp_path {w}/tmp-scgi;
    sendfile on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    {self._http_extra}
    server {{
        listen 127.0.0.1:{self.port};
        server_name localhost;
{self._server_block}
    }}
}}
"""

    def start(self, timeout: float = 10.0) -> Nginx:
        """Write the config, start nginx in the foreground and wait for the port."""
        if self.process is not None and self.process.running:
            return self
        self.conf_path.write_text(self.render_config())
        self.process = Process(
            [
                NGINX_BIN,
                "-p",
                str(self.workdir),
                "-c",
                str(self.conf_path),
                "-e",
                str(self.error_log_path),
                "-g",
                "daemon off;",
            ],
            cwd=self.workdir,
            log_path=self.workdir / "stdout.log",
            name="nginx",
        ).start()
        try:
            wait_for_port("127.0.0.1", self.port, timeout)
            self.process.check_running()
        except (TimeoutError, ProcessError) as exc:
            self.process.kill()
            raise ProcessError(
                f"nginx did not start on {self.host}:\n{self.error_log()}\n{self.process.log_tail()}"
            ) from exc
        return self

    def error_log(self) -> str:
        try:
            return self.error_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def close(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- observation -------------------------------------------------------------------

    def access_log(self) -> list[AccessRecord]:
        return self.access.records()

    def count(
        self, method: str | None = None, path_substring: str = "", *, status: int | None = None
    ) -> int:
        return self.access.count(method, path_substring, status=status)

    def mark_log(self) -> None:
        self.access.mark()

    def wait_quiet(self, quiet: float = 0.15, timeout: float = 5.0) -> list[AccessRecord]:
        return self.access.wait_quiet(quiet, timeout)

    def cache_statuses(self) -> list[str]:
        """``$upstream_cache_status`` per logged request (``HIT``, ``MISS``, ``-`` ...)."""
        return [rec.extra.removeprefix("cache=") for rec in self.access.records()]

    def rss_bytes(self) -> int:
        """Resident memory of master + workers."""
        return self.process.rss_bytes(group=True) if self.process is not None else 0
