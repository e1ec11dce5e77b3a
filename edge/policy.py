"""Signature and scan policies at the edge: wiring of :class:`regcore.policy.PolicyGate`.

:class:`EdgePolicy` is built by the node from ``config.policies`` (the edge config's
``policies`` section). :meth:`EdgePolicy.check` is the one call of the manifest handler, after
the manifest was resolved and before it is served: it lets a GET through or raises 403
DENIED naming the policy (a HEAD serves no content and is not judged; cosign resolves digests
with it) (:mod:`regcore.policy.gate`). Verdicts are kept per (policy,
upstream/repository, digest) for ``policies.verdict_ttl``, by default ``tags.ttl``, so the edge verifies once per digest
per TTL, and a signature pushed (or removed) upstream shows within the tag TTL; blobs stay
served from cache whatever the verdict (the gate is on manifests: no manifest, no pull).

:class:`EdgeArtifacts` is the gate's view of one routed repository, through the caches: the
``sha256-<hex>.sig`` tag and referrer manifests through the
:class:`~edge.manifestservice.ManifestService` (tag cache and manifest store, upstream on a
miss), referrers lists through the :class:`~edge.referrers.ReferrersService`, and payload and
report blobs through the blob cache and its single-flight fills (so a later client read of the
same blob is a cache hit). It uses the request's upstream client, so a private upstream sees
the caller's own credentials.

Metrics (namespace ``quayside_edge``)::

    quayside_edge_policy_decisions_total{kind,policy,outcome}   allowed|warned|denied
    quayside_edge_policy_evaluations_total{kind,policy,how}     evaluated|stale
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter

from edge.fill import FillManager, TooLargeToCache
from edge.negotiation import FULL_ACCEPT
from edge.sources import UpstreamSource
from edge.timeouts import bounded, deadline
from regcore import errors
from regcore.digest import Digest
from regcore.policy import FetchedManifest, PoliciesConfig, PolicyGate
from regcore.reference import Tag, parse_reference

if TYPE_CHECKING:
    from edge.cache import BlobCache
    from edge.manifestservice import ManifestService, Served
    from edge.referrers import ReferrersService
    from edge.routing import Route
    from edge.upstreamclient import UpstreamClient

__all__ = ["EdgeArtifacts", "EdgePolicy"]

_ABSENT = (errors.ManifestUnknown, errors.NameUnknown, errors.BlobUnknown, errors.TagInvalid)
BLOB_WAIT_FACTOR = 4  # a report blob may take a few upstream deadlines to arrive


class EdgeArtifacts:
    """:class:`regcore.policy.ArtifactSource` over one routed repository (module docstring)."""

    def __init__(
        self,
        route: Route,
        client: UpstreamClient,
        *,
        manifests: ManifestService,
        referrers: ReferrersService,
        cache: BlobCache,
        fills: FillManager,
    ) -> None:
        self.route = route
        self.client = client
        self.manifests = manifests
        self.referrers_service = referrers
        self.cache = cache
        self.fills = fills

    async def manifest(self, reference: str) -> FetchedManifest | None:
        svc, route = self.manifests, self.route
        try:
            ref = parse_reference(reference)
            if isinstance(ref, Tag):
                served = await svc.by_tag(
                    route, ref.name, FULL_ACCEPT, need_body=True, client=self.client
                )
            else:
                served = await svc.by_digest(
                    route, ref, FULL_ACCEPT, need_body=True, client=self.client
                )
        except _ABSENT:
            return None
        assert served.body is not None
        return FetchedManifest(served.body, served.media_type, served.digest)

    async def blob(self, digest: str, max_bytes: int) -> bytes | None:
        route, d = self.route, Digest.parse(digest)
        limit = deadline(route.upstream)
        for _ in range(2):  # a blob evicted between lookup and read is fetched once more
            cached = self.cache.lookup(d)
            try:
                if cached is None:
                    size = await bounded(self.client.head_blob(route.name, digest), limit)
                    if size > max_bytes:
                        return None
                    fill = await self.fills.get(
                        d, lambda: UpstreamSource(self.client, route.name, d)
                    )
                    cached = await bounded(fill.result(), limit * BLOB_WAIT_FACTOR)
            except _ABSENT:
                return None
            except TooLargeToCache:
                return None
            if cached.size > max_bytes:
                return None
            try:
                return await asyncio.to_thread(cached.path.read_bytes)
            except FileNotFoundError:
                continue
        return None

    async def referrers(self, digest: str) -> list[dict[str, Any]] | None:
        return await self.referrers_service.descriptors(self.route, digest, self.client)


class EdgePolicy:
    """The edge's pull gate (see the module docstring). ``gate`` is ``None`` when no policy
    is active; :meth:`check` is then free."""

    def __init__(
        self,
        policies: PoliciesConfig,
        *,
        tag_ttl: float,
        clock: Callable[[], float],
        registry: CollectorRegistry,
        manifests: ManifestService,
        referrers: ReferrersService,
        cache: BlobCache,
        fills: FillManager,
    ) -> None:
        self.manifests = manifests
        self.referrers = referrers
        self.cache = cache
        self.fills = fills
        self.gate: PolicyGate | None = None
        if not policies.active:
            return
        decisions = Counter(
            "policy_decisions",
            "Manifest answers judged by a policy",
            ["kind", "policy", "outcome"],
            namespace="quayside_edge",
            registry=registry,
        )
        evaluations = Counter(
            "policy_evaluations",
            "Policy verdicts reached (not reused)",
            ["kind", "policy", "how"],
            namespace="quayside_edge",
            registry=registry,
        )
        ttl = policies.verdict_ttl if policies.verdict_ttl is not None else tag_ttl
        self.gate = PolicyGate(
            policies,
            ttl=ttl,
            clock=clock,
            on_decision=lambda kind, name, outcome: decisions.labels(kind, name, outcome).inc(),
            on_evaluation=lambda kind, name, how="evaluated": evaluations.labels(
                kind, name, how
            ).inc(),
        )

    async def check(self, route: Route, served: Served, client: UpstreamClient) -> None:
        """Let ``served`` (from ``route``) through, or raise Denied."""
        gate = self.gate
        if gate is None or served.body is None or not gate.policies_for(route.name):
            return  # HEAD (no body) is not judged: it serves no content
        source = EdgeArtifacts(
            route,
            client,
            manifests=self.manifests,
            referrers=self.referrers,
            cache=self.cache,
            fills=self.fills,
        )
        scope = f"{route.upstream.name}/{route.name}"
        await gate.check(route.name, served.digest, source, served.body, scope=scope)
