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
:class:`harness.procs.ProcessError` with nginx's error log (the lifecycle is
:class:`harness.service.Service`'s).
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.accesslog import AccessLog, AccessLogged
from harness.ports import free_port, port_open
from harness.service import FixedPortService

NGINX_BIN = "nginx"

_LOG_FORMAT = (
    'log_format qs \'$remote_addr - $remote_user [$time_local] "$request" $status '
    '$body_bytes_sent "$http_referer" "$http_user_agent" cache=$upstream_cache_status\';'
)


class Nginx(AccessLogged, FixedPortService):
    """One nginx instance; build with :meth:`proxy` or :meth:`static`, then :meth:`start`.

    Its memory (:meth:`rss_bytes`) is the master's plus the workers'.
    """

    log_name = "stdout.log"
    readiness = "accept connections"
    group_memory = True

    def __init__(
        self,
        server_block: str,
        http_extra: str = "",
        *,
        workdir: str | Path | None = None,
        port: int | None = None,
        workers: int | str = 1,
        start_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            name="nginx",
            workdir=workdir,
            temp_prefix="qs-nginx-",
            start_timeout=start_timeout,
        )
        self.port = port or free_port()
        self.workers = workers
        self._server_block = server_block
        self._http_extra = http_extra
        self.conf_path = self.workdir / "nginx.conf"
        self.access_log_path = self.workdir / "access.log"
        self.error_log_path = self.workdir / "error.log"
        self.cache_dir = self.workdir / "cache"
        self.access = AccessLog(self.access_log_path)

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

    def prepare(self) -> None:
        self.conf_path.write_text(self.render_config())

    def argv(self) -> list[str]:
        """nginx in the foreground with everything under the work dir."""
        return [
            NGINX_BIN,
            "-p", str(self.workdir),
            "-c", str(self.conf_path),
            "-e", str(self.error_log_path),
            "-g", "daemon off;",
        ]  # fmt: skip

    def ready(self) -> bool:
        return port_open("127.0.0.1", self.port) and self.running

    def failure_detail(self) -> str:
        return f"{self.error_log()}\n{self.log_tail()}"

    def error_log(self) -> str:
        try:
            return self.error_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- observation -------------------------------------------------------------------

    def cache_statuses(self) -> list[str]:
        """``$upstream_cache_status`` per logged request (``HIT``, ``MISS``, ``-`` ...)."""
        return [rec.extra.removeprefix("cache=") for rec in self.access.records()]
