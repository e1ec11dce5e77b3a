"""Client configuration for this setup: the snippets that point clients at the edge.

:func:`client_hints` writes, for the edge URL and the edge config's upstreams (the first is
the default one, as the edge routes):

- Docker ``/etc/docker/daemon.json``: ``registry-mirrors`` (Docker sends no namespace, so only
  the edge's default upstream answers it) and ``insecure-registries`` for a plain-http edge;
- containerd ``/etc/containerd/certs.d/<registry>/hosts.toml`` per upstream: ``server`` the
  upstream, the edge as a ``pull``/``resolve`` host (containerd adds ``?ns=<registry>``,
  which the edge maps to that upstream);
- podman/CRI-O ``/etc/containers/registries.conf``: a ``[[registry]]`` per upstream with the
  edge as ``[[registry.mirror]]``; a path in the mirror location selects a non-default
  upstream by name.

:func:`clients_result` is the matching ``clients`` check: a plain-http edge reached on a
non-loopback address warns (every client needs an insecure-registry entry).
"""

from __future__ import annotations

import ipaddress
import json
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from quayside.doctor.results import Hint, Result

if TYPE_CHECKING:
    from quayside.doctor.setup import EdgeConfig, UpstreamConfig

__all__ = ["client_hints", "clients_result", "registry_host"]


def registry_host(upstream: UpstreamConfig) -> str:
    """The registry name images of ``upstream`` are pulled by (``docker.io`` for Hub)."""
    return "docker.io" if upstream.docker_hub else upstream.netloc


def _insecure(url: str) -> bool:
    return url.startswith("http://")


def client_hints(edge_url: str, edge: EdgeConfig | None) -> list[Hint]:
    """Snippets for Docker, containerd and podman pointing at ``edge_url``."""
    netloc = urlsplit(edge_url).netloc
    daemon: dict[str, object] = {"registry-mirrors": [edge_url]}
    if _insecure(edge_url):
        daemon["insecure-registries"] = [netloc]
    hints = [Hint("docker", "/etc/docker/daemon.json", json.dumps(daemon, indent=2) + "\n")]
    upstreams = list(edge.upstreams) if edge is not None else []
    default = edge.default() if edge is not None else None
    for upstream in upstreams:
        registry = registry_host(upstream)
        server = "https://registry-1.docker.io" if upstream.docker_hub else upstream.url
        text = f'server = "{server}"\n\n[host."{edge_url}"]\n  capabilities = ["pull", "resolve"]\n'
        if edge_url.startswith("https://"):
            text += '  # ca = "/etc/containerd/certs.d/' + registry + '/ca.crt"  (private CA)\n'
        hints.append(Hint("containerd", f"/etc/containerd/certs.d/{registry}/hosts.toml", text))
    if upstreams:
        blocks = ['unqualified-search-registries = ["docker.io"]\n']
        for upstream in upstreams:
            registry = registry_host(upstream)
            location = "registry-1.docker.io" if upstream.docker_hub else upstream.netloc
            mirror = netloc if upstream is default else f"{netloc}/{upstream.name}"
            block = f'[[registry]]\nprefix = "{registry}"\nlocation = "{location}"\n'
            if _insecure(upstream.url):
                block += "insecure = true\n"
            block += f'\n  [[registry.mirror]]\n  location = "{mirror}"\n'
            if _insecure(edge_url):
                block += "  insecure = true\n"
            blocks.append(block)
        hints.append(Hint("podman", "/etc/containers/registries.conf", "\n".join(blocks)))
    return hints


def clients_result(edge_url: str) -> Result:
    host = urlsplit(edge_url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if _insecure(edge_url) and not loopback:
        return Result.warn(
            "clients",
            "edge-tls",
            f"{edge_url} is plain http: every client needs an insecure-registry entry",
            "put TLS in front (deploy/nginx/tls-front.conf) and use https:// in client configs",
        )
    return Result.ok("clients", "edge-tls", f"client snippets below point at {edge_url}")
