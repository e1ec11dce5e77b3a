"""The reference registry (Debian's ``docker-registry``, distribution 2.8.2) as a real peer.

``DockerRegistry`` writes a JSON config (JSON is valid YAML), runs ``docker-registry serve`` on
``127.0.0.1:<free port>`` and exposes its access log (combined format on stdout) as records, so
tests count exactly what it served. Modes:

- plain registry (default), storage under ``root`` with deletes enabled;
- reference pull-through cache: ``proxy_remoteurl=...`` (+ optional username/password);
- behind Bearer token auth: ``auth_token=TokenAuth(...)``; or htpasswd Basic auth.

Guarantees: :meth:`start` returns only once ``/v2/`` answers over HTTP (any status) or raises
:class:`harness.procs.ProcessError` with the registry's log tail; :meth:`close` stops the
process and deletes the temp dir it created (never a directory passed in by the caller). The
lifecycle is :class:`harness.service.Service`'s; ``log_text()`` is the whole log (app log +
access log).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.accesslog import AccessLog, AccessLogged
from harness.ports import free_port, http_status
from harness.service import FixedPortService

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


class DockerRegistry(AccessLogged, FixedPortService):
    """A running ``docker-registry serve`` (start with :meth:`start` or ``with``).

    :meth:`stop` is graceful (storage stays; :meth:`start` again reuses it), :meth:`kill` a
    crashed upstream, :meth:`pause` a hung one (connections accepted, never answered).
    """

    log_name = "registry.log"
    readiness = "answer GET /v2/"
    poll_interval = 0.05

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
        super().__init__(
            name="docker-registry",
            workdir=workdir,
            temp_prefix="qs-registry-",
            start_timeout=start_timeout,
        )
        self.port = port or free_port()
        self.root = Path(root) if root is not None else self.workdir / "storage"
        self.root.mkdir(parents=True, exist_ok=True)
        self.proxy_remoteurl = proxy_remoteurl
        self.proxy_username = proxy_username
        self.proxy_password = proxy_password
        self.auth_token = auth_token
        self.htpasswd = Path(htpasswd) if htpasswd is not None else None
        self.htpasswd_realm = htpasswd_realm
        self.extra_config = extra_config or {}
        self.config_path = self.workdir / "config.json"
        self._http_secret = secrets.token_hex(16)
        self.access = AccessLog(self.log_path)

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

    def prepare(self) -> None:
        """Write the config (raises ValueError for both ``auth_token`` and ``htpasswd``)."""
        self.config_path.write_text(json.dumps(self.config(), indent=2))

    def argv(self) -> list[str]:
        return [REGISTRY_BIN, "serve", str(self.config_path)]

    def ready(self) -> bool:
        return http_status(self.url + "/v2/") is not None

    # -- observation ---------------------------------------------------------------------

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
