"""Which upstream a pull request goes to, and the repository name on that upstream.

Three ways to choose, in this order (PROTOCOL.md 1):

1. ``?ns=<registry host>`` (containerd adds it to every mirror request). The value is matched
   only against configured upstreams: their ``name``, the ``host[:port]`` of their URL and
   their ``hosts`` aliases; ``docker.io``, ``index.docker.io`` and ``registry-1.docker.io`` all
   select a Docker Hub upstream. An ``ns`` that selects nothing is refused with 404
   NAME_UNKNOWN naming the namespace: the edge never dials a host a client named.
   The answer echoes ``OCI-Namespace: <ns>``. An ``ns`` that is not visible ASCII (a control
   character, a space, non-ASCII; :func:`valid_ns`) is 400 NAME_INVALID and is not echoed.
2. Path prefix: ``/v2/<upstream-name>/<repo>/...`` when the first component of the name is the
   ``name`` of a configured upstream (podman mirror locations with a path). The prefix wins
   over a repository of the default upstream whose first component happens to be equal.
3. The default upstream (``default_upstream``, else the first configured).

For a Docker Hub upstream one-segment names become ``library/<name>`` (Docker's
``registry-mirrors`` semantics), whichever way it was chosen.

Raises :class:`regcore.errors.NameUnknown` (unknown ``ns``) and
:class:`regcore.errors.NameInvalid` (the upstream-side name breaks the spec's grammar).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge.config import EdgeConfig
from edge.memo import Memo
from edge.upstreamconfig import DOCKER_HUB_HOSTS, UpstreamConfig
from regcore import errors
from regcore.reference import normalize_docker_hub, validate_name

NS_HEADER = "OCI-Namespace"


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes: ``upstream`` and the repository ``name`` as that upstream
    knows it. ``ns`` is the ``?ns=`` value that chose the upstream (echo it), else ``None``."""

    upstream: UpstreamConfig
    name: str
    ns: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """Headers every answer for this route carries (``OCI-Namespace`` when ``ns`` was used)."""
        return {NS_HEADER: self.ns} if self.ns is not None else {}


class Router:
    """Maps (client-side name, ``ns``) to a :class:`Route`. Its answers never change after
    construction, so routes are memoised (bounded, :class:`edge.memo.Memo`); refusals are not."""

    def __init__(self, upstreams: Sequence[UpstreamConfig], default: UpstreamConfig) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is required")
        self.upstreams = tuple(upstreams)
        self.default = default
        self._by_name = {u.name: u for u in self.upstreams}
        self._by_ns: dict[str, UpstreamConfig] = {}
        for u in self.upstreams:
            names = list(u.match_names)
            if u.docker_hub:
                names.extend(DOCKER_HUB_HOSTS)
            for n in names:
                self._by_ns.setdefault(n.lower(), u)
        self._routes: Memo[tuple[str, str | None], Route] = Memo()

    @classmethod
    def from_config(cls, config: EdgeConfig) -> Router:
        return cls(config.upstreams, config.default())

    def upstream_named(self, name: str) -> UpstreamConfig | None:
        return self._by_name.get(name)

    def for_ns(self, ns: str) -> UpstreamConfig | None:
        """The upstream selected by an ``ns`` value, or ``None``. Case-insensitive."""
        return self._by_ns.get(ns.strip().lower())

    def route(self, name: str, ns: str | None = None) -> Route:
        """Choose the upstream for the client-side repository ``name``.

        Raises:
            NameUnknown: ``ns`` is given but names no configured upstream.
            NameInvalid: the resulting upstream-side name is not a valid repository name.
        """
        route = self._routes.get((name, ns))
        if route is None:
            route = self._routes.put((name, ns), self._route(name, ns))
        return route

    def _route(self, name: str, ns: str | None) -> Route:
        if ns is not None:
            upstream = self.for_ns(ns)
            if upstream is None:
                raise errors.NameUnknown(
                    {"ns": ns[:100]},
                    message=f"namespace {ns[:100]!r} is not configured on this mirror",
                )
            return Route(upstream, self._upstream_name(upstream, name), ns)
        first, sep, rest = name.partition("/")
        if sep and rest:
            prefixed = self._by_name.get(first)
            if prefixed is not None:
                return Route(prefixed, self._upstream_name(prefixed, rest))
        return Route(self.default, self._upstream_name(self.default, name))

    @staticmethod
    def _upstream_name(upstream: UpstreamConfig, name: str) -> str:
        if upstream.docker_hub:
            return normalize_docker_hub(name)
        return validate_name(name)


def valid_ns(value: str) -> bool:
    """Whether ``value`` can be an ``ns``: a registry host (``[::1]:5000`` included) or an
    upstream name, so visible ASCII only, 1-255 characters -- and safe to echo in a header."""
    return 0 < len(value) <= 255 and all("!" <= c <= "~" for c in value)


def ns_of(query: Mapping[str, str]) -> str | None:
    """The ``ns`` value of a request's query (``request.query``); ``None`` when absent or empty.

    Raises NameInvalid (400) for a value that is not :func:`valid_ns` (a control character, a
    space, non-ASCII): the client's mistake, refused before it can reach ``OCI-Namespace``."""
    value = query.get("ns")
    if value and not valid_ns(value):
        raise errors.NameInvalid(
            {"ns": value[:100]}, message="invalid ns parameter: expected a registry host"
        )
    return value or None
