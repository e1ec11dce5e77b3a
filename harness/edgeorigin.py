"""A token-protected Quayside origin with an edge in front of it, as real processes.

:class:`EdgeOriginStack` starts ``quayside origin serve`` in ``auth.token`` mode with its own
token service (htpasswd users, ``quayside.auth.access`` rules) and a ``quayside edge serve
--config FILE`` whose only upstream is that origin in ``auth.mode: token``. Tests then:

- ask the origin's token service for tokens (:meth:`token`, Basic credentials of a user);
- push images straight to the origin with a push token (:meth:`push`, raw OCI HTTP through
  :class:`regcore.client.RegistryClient`);
- talk to the edge (``stack.edge.url``) with :func:`request` (urllib, errors returned, TLS
  verified against ``cafile`` when given).

``edge_top`` adds top-level edge settings (``tls``, ``auth``); ``upstream`` adds keys to the
upstream entry. Every password and token handed out is collected in :attr:`secrets`, so a test
can grep the logs for them. :meth:`close` stops both processes; idempotent.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.authclients import basic_header
from harness.authstack import start_configured_edge
from harness.images import Image, ImageIndex
from harness.ports import free_port
from harness.servers import EdgeProcess, OriginProcess
from regcore.auth.htpasswd import hash_password, write_entries
from regcore.client import RegistryClient

__all__ = ["ISSUER", "SERVICE", "EdgeOriginStack", "Reply", "request"]

ISSUER = "quayside"
SERVICE = "quayside"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def codes(self) -> list[str]:
        """The OCI error codes of the body (``[]`` when it is not an error envelope)."""
        try:
            return [e["code"] for e in json.loads(self.body)["errors"]]
        except (ValueError, KeyError, TypeError):
            return []


def request(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    cafile: str | Path | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 20.0,
) -> Reply:
    """One request with urllib (4xx/5xx returned, not raised; no redirects expected). HTTPS
    is verified against ``cafile``, or uses ``context`` as given (client certificates)."""
    req = urllib.request.Request(url, method=method, headers=dict(headers or {}), data=data)
    if context is None and cafile:
        context = ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return Reply(int(resp.status), resp.read(), dict(resp.headers))
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(int(exc.code), exc.read(), dict(exc.headers))


class EdgeOriginStack:
    """See the module docstring. ``users``: name -> password; ``rules``: the origin's
    ``quayside.auth.access`` list."""

    def __init__(
        self,
        tmp: Path,
        *,
        users: Mapping[str, str],
        rules: list[dict[str, Any]],
        edge_top: Mapping[str, Any] | None = None,
        upstream: Mapping[str, Any] | None = None,
    ) -> None:
        self.tmp = tmp
        self.users = dict(users)
        self.secrets: list[str] = list(users.values())
        htpasswd = tmp / "origin-users"
        write_entries(htpasswd, {u: hash_password(p, cost=4) for u, p in users.items()})
        port = free_port()
        self.realm = f"http://127.0.0.1:{port}/auth/token"
        self.root = tmp / "origin-root"
        config = {
            "auth": {"token": {"realm": self.realm, "service": SERVICE, "issuer": ISSUER}},
            "storage": {"delete": {"enabled": True}},
            "quayside": {
                "auth": {
                    "access": rules,
                    "tokenservice": {"enabled": True, "users": str(htpasswd)},
                    "limits": {"failures_per_user": 0, "failures_per_address": 0},
                }
            },
        }
        self.origin = OriginProcess(
            root=self.root, workdir=tmp / "origin", config=config, listen_port=port
        )
        self.edge_top = dict(edge_top or {})
        self.upstream_extra = dict(upstream or {})
        self.edge: EdgeProcess | None = None

    def start(self) -> EdgeOriginStack:
        self.origin.start()
        try:
            entry = {
                "name": "origin",
                "url": self.origin.url,
                "auth": {"mode": "token", "issuer": ISSUER},
                **self.upstream_extra,
            }
            self.edge = start_configured_edge(
                self.tmp / "edge", [entry], name="edge", top=self.edge_top
            )
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.edge is not None:
            self.edge.close()
        self.origin.close()

    # -- tokens and content ------------------------------------------------------------------
    def token(self, user: str | None, *scopes: str) -> str:
        """A token from the origin's token service for ``scopes`` (anonymous: ``None``)."""
        query = "&".join([f"service={SERVICE}", *(f"scope={s}" for s in scopes)])
        headers = basic_header(user, self.users[user]) if user else {}
        reply = request(f"{self.realm}?{query}", headers=headers)
        if reply.status != 200:
            raise RuntimeError(f"token service answered {reply.status}")
        token: str = json.loads(reply.body)["token"]
        self.secrets.append(token)
        return token

    def push(self, item: Image | ImageIndex, repo: str, tag: str, user: str) -> str:
        """Push ``item`` to the origin as ``user`` (a pull+push token); its digest."""
        token = self.token(user, f"repository:{repo}:pull,push")
        return asyncio.run(self._push(item, repo, tag, token))

    async def _push(self, item: Image | ImageIndex, repo: str, tag: str, token: str) -> str:
        children = item.images if isinstance(item, ImageIndex) else (item,)
        async with RegistryClient(self.origin.url, token=token) as client:
            for child in children:
                for data in child.blobs().values():
                    await client.push_blob(repo, data)
                if isinstance(item, ImageIndex):
                    await client.push_manifest(repo, child.digest, child.manifest, child.media_type)
            return await client.push_manifest(repo, tag, item.manifest, item.media_type)

    def storage_files(self) -> list[Path]:
        """Every regular file under the origin's storage root (uploads, links, blobs)."""
        return sorted(p for p in self.root.rglob("*") if p.is_file())
