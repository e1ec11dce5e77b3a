"""The reference registry (Debian's ``docker-registry``, distribution 2.8.2) as a real peer.

``DockerRegistry`` writes a JSON config (JSON is valid YAML), runs ``docker-registry serve`` on
``127.0.0.1:<free port>`` and exposes its access log (combined format on stdout) as records, so
tests count exactly what it served. Modes:

- plain registry (default), storage under ``root`` with deletes enabled;
- reference pull-through cache: ``proxy_remoteurl=...`` (+ optional username/password);
- behind Bearer token auth: ``auth_token=TokenAuth(...)``; or htpasswd Basic auth.

Guarantees: :meth:`start` returns only once ``/v2/`` answers over HTTP (any status) or raises
:class:`harness.procs.ProcessError` with the registry's log tail; :meth:`close` stops the
process and deletes the temp dir it created (never a directory passed in by the caller).
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.accesslog import AccessLog, AccessRecord
from harness.ports import free_port, wait_http
from harness.procs import Process, ProcessError

REGISTRY_BIN = "docker-registry"


@dataclass(frozen=True)
class TokenAuth:
    """``auth.token`` section: the registry trusts JWTs signed by a key in ``rootcertbundle``."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: str

    def to_dict(self) -> dict[str, str]:
        return {
            "realm": self.realm,
            "service": self.service,
            "issuer": self.issuer,
            "rootcertbundle": self.rootcertbundle,
        }


class DockerRegistry:
    """A running ``docker-registry serve`` (start with :meth:`start` or ``with``)."""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        workdir: str | Path | None = None,
        port: int | None = None,
        proxy_remoteurl: str | None = None,
        proxy_username: str | None = None,
        proxy_password: str | None = None,
        auth_token: TokenAuth | None = None,
        htpasswd: str | Path | None = None,
        htpasswd_realm: str = "quayside-test",
        extra_config: dict[str, Any] | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="qs-registry-"))
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = Path(root) if root is not None else self.workdir / "storage"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proxy_remoteurl = proxy_remoteurl
        self.proxy_username = proxy_username
        self.proxy_password = proxy_password
        self.auth_token = auth_token
        self.htpasswd = Path(htpasswd) if htpasswd is not None else None
        self.htpasswd_realm = htpasswd_realm
        self.extra_config = extra_config or {}
        self.start_timeout = start_timeout
        self.config_path = self.workdir / "config.json"
        self.log_path = self.workdir / "registry.log"
        self.process: Process | None = None
        self._http_secret = secrets.token_hex(16)
        self.access = AccessLog(self.log_path)

    # -- addresses -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` (what skopeo/podman/containerd call the registry)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    def ref(self, repo: str, tag_or_digest: str) -> str:
        """``docker://127.0.0.1:PORT/repo:tag`` (or ``@sha256:...``) for skopeo."""
        sep = "@" if ":" in tag_or_digest else ":"
        return f"docker://{self.host}/{repo}{sep}{tag_or_digest}"

    # -- config and lifecycle ------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The config document this registry is (or will be) started with."""
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": self._http_secret},
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.proxy_remoteurl:
            proxy: dict[str, str] = {"remoteurl": self.proxy_remoteurl}
            if self.proxy_username is not None:
                proxy["username"] = self.proxy_username
                proxy["password"] = self.proxy_password or ""
            cfg["proxy"] = proxy
        if self.auth_token is not None and self.htpasswd is not None:
            raise ValueError("choose one of auth_token and htpasswd")
        if self.auth_token is not None:
            cfg["auth"] = {"token": self.auth_token.to_dict()}
        elif self.htpasswd is not None:
            cfg["auth"] = {"htpasswd": {"realm": self.htpasswd_realm, "path": str(self.htpasswd)}}
        _deep_merge(cfg, self.extra_config)
        return cfg

    def start(self) -> DockerRegistry:
        """Write the config, start the process and wait until ``/v2/`` answers.

        Raises:
            ProcessError: the registry exited or did not answer within ``start_timeout``.
        """
        if self.process is not None and self.process.running:
            return self
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        self.process = Process(
            [REGISTRY_BIN, "serve", str(self.config_path)],
            cwd=self.workdir,
            log_path=self.log_path,
            name="docker-registry",
        ).start()
        try:
            wait_http(self.url + "/v2/", timeout=self.start_timeout)
        except TimeoutError as exc:
            tail = self.process.log_tail()
            self.process.kill()
            raise ProcessError(f"docker-registry did not come up on {self.host}:\n{tail}") from exc
        return self

    def stop(self) -> None:
        """Graceful stop (SIGTERM, then SIGKILL). Storage stays; :meth:`start` again reuses it."""
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """SIGKILL (a crashed upstream)."""
        if self.process is not None:
            self.process.kill()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but never answered (a hung upstream)."""
        if self.process is not None:
            self.process.pause()

    def resume(self) -> None:
        if self.process is not None:
            self.process.resume()

    def close(self) -> None:
        """Stop and delete the temp dir this object created. Idempotent."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DockerRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- observation ---------------------------------------------------------------------

    def access_log(self) -> list[AccessRecord]:
        """Access records since the last :meth:`mark_log` (all by default)."""
        return self.access.records()

    def count(
        self, method: str | None = None, path_substring: str = "", *, status: int | None = None
    ) -> int:
        """Number of logged requests with ``method`` whose path contains ``path_substring``."""
        return self.access.count(method, path_substring, status=status)

    def mark_log(self) -> None:
        """Count only requests logged after this call."""
        self.access.mark()

    def wait_quiet(self, quiet: float = 0.15, timeout: float = 5.0) -> list[AccessRecord]:
        """Wait until the log stopped growing for ``quiet`` s; return the records."""
        return self.access.wait_quiet(quiet, timeout)

    def log_text(self) -> str:
        """The whole log (app log + access log), for failure messages."""
        return self.process.log_text() if self.process is not None else ""

    def blob_path(self, digest: str) -> Path:
        """Where registry:2 keeps a blob's bytes under ``root`` (for corruption tests)."""
        algo, hexpart = digest.split(":", 1)
        return self.root / "docker/registry/v2/blobs" / algo / hexpart[:2] / hexpart / "data"


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
