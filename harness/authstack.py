"""A token-protected upstream for edge tests, and edges configured from a YAML file.

``TokenProtectedRegistry`` is the real thing a private registry is: ``docker-registry``
behind Bearer auth, its realm a :class:`harness.tokenserver.TokenServer` (served from a
thread, so it answers while the test blocks in skopeo or urllib) with users and grants.
With ``cdn_host`` (e.g. ``"127.0.0.2"``, another loopback host) the registry runs
distribution's ``redirect`` storage middleware: blob GET/HEAD answer ``307`` to a
:class:`harness.faultserver.FaultServer` on that host serving the registry's storage
directory -- what S3/GCS-backed registries and Docker Hub's CDN do. The CDN records every
request, so tests can prove that no ``Authorization`` reached it. ``realm_host`` puts the
realm on another host than the registry's ``127.0.0.1`` (credentials must not go there)::

    with TokenProtectedRegistry(tmp_path / "up", users={"bot": pw}, grants=..., cdn_host="127.0.0.2") as up:
        up.push(image, "team/app", "v1", "bot", pw)
        edge = start_configured_edge(tmp_path / "edge", [up.upstream_entry("private", username="bot", password_file=f)])

:func:`write_edge_config` writes the edge's ``--config`` YAML; :func:`start_configured_edge`
starts a real ``quayside edge serve --config FILE`` child (no ``--upstream`` flags, so the
file's upstreams with their credentials are what the edge uses). :func:`http` is a tiny
synchronous HTTP call that returns error statuses instead of raising.

Guarantees: :meth:`TokenProtectedRegistry.start` returns with all parts answering (or
raises ``ProcessError``/``TimeoutError``); :meth:`close` stops every part it started and is
idempotent.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from harness.faultserver import FaultServer
from harness.images import Image, ImageIndex
from harness.registry import DockerRegistry
from harness.servers import EdgeProcess
from harness.tokenserver import TokenServer
from regcore.auth.tokens import Access
from regcore.client import RegistryClient


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body (empty for HEAD) and headers (names as sent)."""

    status: int
    body: bytes
    headers: Mapping[str, str]


def http(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout: float = 20.0,
) -> Reply:
    """One request with urllib (no redirects are expected from an edge); 4xx/5xx returned."""
    req = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(int(resp.status), resp.read(), dict(resp.headers))
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(int(exc.code), exc.read(), dict(exc.headers))


class TokenProtectedRegistry:
    """docker-registry + its token realm (+ optional cross-host blob CDN); see the module doc."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        users: Mapping[str, str],
        grants: Mapping[str, Mapping[str, Iterable[str]]],
        cdn_host: str | None = None,
        realm_host: str = "127.0.0.1",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tokens = TokenServer(
            users=users, grants=grants, host=realm_host, workdir=self.workdir / "tokens"
        )
        self.registry: DockerRegistry | None = None
        self.cdn: FaultServer | None = None
        if cdn_host is not None:
            self.cdn = FaultServer(host=cdn_host, name="cdn")
        self._started = False

    @property
    def url(self) -> str:
        return self._registry().url

    @property
    def host(self) -> str:
        return self._registry().host

    def _registry(self) -> DockerRegistry:
        if self.registry is None:
            raise RuntimeError("TokenProtectedRegistry not started")
        return self.registry

    def start(self) -> TokenProtectedRegistry:
        """Start realm, CDN (if any) and registry. Raises ProcessError / TimeoutError."""
        if self._started:
            return self
        self._started = True
        try:
            self.tokens.start_in_thread()
            extra: dict[str, Any] = {}
            registry = DockerRegistry(
                workdir=self.workdir / "registry", auth_token=self.tokens.token_auth()
            )
            if self.cdn is not None:
                self.cdn.route("*", "/{tail:.*}", FaultServer.static_handler(registry.root))
                self.cdn.start()
                extra = {
                    "middleware": {
                        "storage": [{"name": "redirect", "options": {"baseurl": self.cdn.url}}]
                    }
                }
            registry.extra_config = extra
            self.registry = registry
            registry.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the registry, the CDN and the realm. Idempotent."""
        if self.registry is not None:
            self.registry.close()
        if self.cdn is not None:
            self.cdn.close()
        if self._started:
            self.tokens.stop_thread()
            self._started = False

    def __enter__(self) -> TokenProtectedRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def push(
        self,
        item: Image | ImageIndex,
        repo: str,
        tag: str,
        username: str,
        password: str | None = None,
    ) -> str:
        """Push ``item`` (blobs, index children, then the tag) as ``username`` through
        :class:`regcore.client.RegistryClient`; return the manifest digest. With ``password``
        the client does the realm's token dance; without, it uses a pull/push token issued
        directly by the realm's issuer (the realm sees no request). Call it from synchronous
        code (it runs its own event loop; in a loop use :meth:`push_async`).
        Raises regcore.errors."""
        return asyncio.run(self.push_async(item, repo, tag, username, password))

    async def push_async(
        self,
        item: Image | ImageIndex,
        repo: str,
        tag: str,
        username: str,
        password: str | None = None,
    ) -> str:
        """:meth:`push` for callers inside an event loop."""
        token = None
        if password is None:
            access = [Access("repository", repo, ("pull", "push"))]
            token = self.tokens.issuer.issue(username, access).token
        children = item.images if isinstance(item, ImageIndex) else (item,)
        async with RegistryClient(
            self.url, username=username if token is None else None, password=password, token=token
        ) as client:
            for child in children:
                for data in child.blobs().values():
                    await client.push_blob(repo, data)
                if isinstance(item, ImageIndex):
                    await client.push_manifest(repo, child.digest, child.manifest, child.media_type)
            return await client.push_manifest(repo, tag, item.manifest, item.media_type)

    def upstream_entry(self, name: str, **settings: Any) -> dict[str, Any]:
        """An ``upstreams:`` entry for the edge config: ``name``, ``url`` and ``settings``
        (``username``, ``password_file``, ``token_file``, ``private``, ``retries``...)."""
        return {"name": name, "url": self.url, **settings}


def write_edge_config(path: str | Path, upstreams: Sequence[Mapping[str, Any]], **top: Any) -> Path:
    """Write an edge YAML config with ``upstreams`` and any top-level ``top`` settings."""
    doc: dict[str, Any] = {"upstreams": [dict(u) for u in upstreams], **top}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def start_configured_edge(
    workdir: str | Path,
    upstreams: Sequence[Mapping[str, Any]],
    *,
    name: str = "edge",
    top: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> EdgeProcess:
    """A started ``quayside edge serve --config WORKDIR/edge.yml`` (a real child process);
    ``kwargs`` go to :class:`harness.servers.EdgeProcess`. The caller closes it.
    Raises ProcessError when the edge does not come up (the message has its log tail)."""
    workdir = Path(workdir)
    config = write_edge_config(workdir / f"{name}.yml", upstreams, **dict(top or {}))
    edge = EdgeProcess(
        [], workdir=workdir, name=name, extra_args=["--config", str(config)], **kwargs
    )
    try:
        edge.start()
    except BaseException:
        edge.close()
        raise
    return edge
