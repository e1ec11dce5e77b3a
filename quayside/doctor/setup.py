"""What the doctor looks at: URLs given on the command line and the servers' config files.

:func:`load_setup` reads each ``--config`` file, decides whether it is an origin's
(distribution's ``config.yml`` keys: ``version``, ``storage``, ``http``, ``auth``...) or an
edge's (``upstreams``, ``cache``, ``redis``, ``listen``...), and loads it with the server's
own loader and the environment the server would see, so the doctor checks what the server
would run with. A file that does not load is a failed ``config`` result, not an exception: the
rest of the checklist still runs. URLs not given are derived from the configs (the origin's
``http.host``, else ``http.addr`` with ``https`` when TLS is on; the edge's ``listen``), with
wildcard addresses replaced by loopback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from edge.config import EdgeConfig, load_edge_config
from edge.upstreamconfig import UpstreamConfig
from quayside.doctor.results import Result
from regcore.config import ConfigError, OriginConfig, load_origin_config
from regcore.configvalues import join_hostport, split_hostport

__all__ = [
    "EdgeConfig",
    "OriginConfig",
    "Setup",
    "UpstreamConfig",
    "config_kind",
    "load_edge_config",
    "load_setup",
    "local_url",
]

_EDGE_KEYS = frozenset({"upstreams", "cache", "redis", "listen", "advertise", "default_upstream"})
_ORIGIN_KEYS = frozenset({"version", "storage", "http", "auth", "health", "quayside"})


@dataclass(frozen=True)
class Setup:
    """One registry setup as the doctor sees it. ``timeout`` bounds each network step;
    ``ca_file`` is a CA bundle (PEM) clients are told to trust, for the TLS checks."""

    origin_url: str | None = None
    edge_url: str | None = None
    origin: OriginConfig | None = None
    edge: EdgeConfig | None = None
    ca_file: str | None = None
    timeout: float = 5.0
    problems: list[Result] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.origin_url or self.edge_url or self.origin or self.edge)


def config_kind(data: Any) -> str | None:
    """``"edge"``, ``"origin"`` or ``None`` for a parsed config document."""
    if not isinstance(data, Mapping):
        return None
    keys = {str(k) for k in data}
    if keys & _EDGE_KEYS:
        return "edge"
    if keys & _ORIGIN_KEYS:
        return "origin"
    return None


def local_url(addr: str, *, tls: bool = False) -> str:
    """``http(s)://HOST:PORT`` for a listen address (wildcards become loopback).
    Raises ValueError for a malformed address."""
    host, port = split_hostport(addr)
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"{'https' if tls else 'http'}://{join_hostport(host, port)}"


def load_setup(
    *,
    origin_url: str | None = None,
    edge_url: str | None = None,
    configs: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    ca_file: str | None = None,
    timeout: float = 5.0,
) -> Setup:
    """Read ``configs`` (see the module docstring) and complete the URLs. Never raises for a
    bad config file (it becomes a failed ``config`` result in :attr:`Setup.problems`)."""
    env = dict(environ or {})
    origin: OriginConfig | None = None
    edge: EdgeConfig | None = None
    problems: list[Result] = []
    for path in configs:
        name = Path(path).name
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            problems.append(
                Result.fail("config", name, f"cannot read {path}: {_short(exc)}", "fix the file")
            )
            continue
        kind = config_kind(data)
        try:
            if kind == "edge":
                edge = load_edge_config(path, env)
            elif kind == "origin":
                origin = load_origin_config(path, env)
            else:
                problems.append(
                    Result.fail(
                        "config",
                        name,
                        "neither an origin config (storage/http/version) nor an edge config "
                        "(upstreams/cache/redis)",
                        "pass the file the server is started with (--config)",
                    )
                )
                continue
        except ConfigError as exc:
            problems.append(
                Result.fail(
                    "config", name, str(exc), f"the {kind} would refuse to start: fix that key"
                )
            )
            continue
        problems.append(Result.ok("config", name, f"{kind} config loads"))
    if origin_url is None and origin is not None:
        origin_url = origin.http.host or _try_local(origin.http.addr, origin.http.tls.enabled)
    if edge_url is None and edge is not None:
        edge_url = _try_local(edge.listen, False)
    return Setup(
        origin_url=_clean(origin_url),
        edge_url=_clean(edge_url),
        origin=origin,
        edge=edge,
        ca_file=ca_file,
        timeout=timeout,
        problems=problems,
    )


def _try_local(addr: str, tls: bool) -> str | None:
    try:
        port = split_hostport(addr)[1]
    except ValueError:
        return None
    return None if port == 0 else local_url(addr, tls=tls)


def _clean(url: str | None) -> str | None:
    if url is None:
        return None
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
