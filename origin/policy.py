"""Signature and scan policies at the origin: wiring of :class:`regcore.policy.PolicyGate`.

- :func:`install` builds the gate from ``config.policies`` (``quayside.policies``) when some
  policy is not ``off`` and stores it under :data:`POLICY`. Verdicts are reused for
  ``verdict_ttl`` seconds (default 0: every pull looks again, which costs a few local reads;
  signature checks themselves are remembered, so each is computed once).
- :func:`check_pull` is the one call of the manifest GET/HEAD handler: it lets the pull
  through or raises 403 DENIED naming the policy (see :mod:`regcore.policy.gate`). HEAD and
  signed-in callers who may push to the repository (the signer, the scanner) are not judged.
- :class:`OriginArtifacts` is the gate's view of one repository: manifests by tag or digest
  that are revisions of the repository, blobs linked into it, and its referrers index.

Metrics (namespace ``quayside_origin``)::

    quayside_origin_policy_decisions_total{kind,policy,outcome}   allowed|warned|denied
    quayside_origin_policy_evaluations_total{kind,policy,how}     evaluated|stale
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from origin import state
from origin.access import ACCESS
from origin.authz import PRINCIPAL
from origin.repository import Repositories
from regcore import errors
from regcore import manifest as mf
from regcore.digest import Digest
from regcore.reference import Tag, parse_reference
from regcore.storage.interfaces import BlobReader

if TYPE_CHECKING:
    from regcore.policy import FetchedManifest, PolicyGate

__all__ = ["POLICY", "OriginArtifacts", "check_pull", "install"]

POLICY: web.AppKey[PolicyGate] = web.AppKey("origin_policy_gate")


def install(app: web.Application, config: Any, metrics: Any) -> None:
    """Build the gate for ``config.policies`` (nothing when no policy is active)."""
    policies = config.policies
    if not policies.active:
        return
    from regcore.policy import PolicyGate  # the policy engine (cryptography) only when active

    decisions = metrics.counter(
        "policy_decisions", "Pulls judged by a policy", ["kind", "policy", "outcome"]
    )
    evaluations = metrics.counter(
        "policy_evaluations", "Policy verdicts reached (not reused)", ["kind", "policy", "how"]
    )
    app[POLICY] = PolicyGate(
        policies,
        ttl=policies.verdict_ttl or 0.0,
        clock=time.monotonic,
        on_decision=lambda kind, name, outcome: decisions.labels(kind, name, outcome).inc(),
        on_evaluation=lambda kind, name, how="evaluated": evaluations.labels(kind, name, how).inc(),
    )


async def check_pull(request: web.Request, name: str, digest: Digest, raw: bytes) -> None:
    """Let the pull of ``digest`` (bytes ``raw``) from ``name`` through, or raise Denied.

    Not judged: ``HEAD`` (it serves no content; cosign and crane resolve digests with it),
    and a signed-in caller who may push to the repository (CI that signs or scans an image
    must read it first). Anonymous callers are always judged, also on an origin without
    authentication.
    """
    gate = request.app.get(POLICY)
    if gate is None or request.method == "HEAD":
        return
    principal = request.get(PRINCIPAL)
    if principal is not None and not principal.anonymous:
        if request.app[ACCESS].authorizer.allowed(principal, "push", name):
            return
    app = request.app
    source = OriginArtifacts(
        app[state.REPOS], app[state.STORE], name, persist=not app.get(state.READONLY, False)
    )
    await gate.check(name, str(digest), source, raw)


class OriginArtifacts:
    """:class:`regcore.policy.ArtifactSource` over one repository of this origin."""

    def __init__(
        self, repos: Repositories, store: BlobReader, name: str, *, persist: bool = True
    ) -> None:
        self.repos = repos
        self.store = store
        self.name = name
        self.persist = persist  # may build the referrers index of a registry:2 root

    async def manifest(self, reference: str) -> FetchedManifest | None:
        from regcore.policy import FetchedManifest

        try:
            ref = parse_reference(reference)
            digest = (
                await self.repos.resolve_tag(self.name, ref.name) if isinstance(ref, Tag) else ref
            )
            if not await self.repos.revision_exists(self.name, digest):
                return None
            raw = await self.store.read_bytes(digest, limit=mf.MAX_MANIFEST_BYTES)
            media_type = mf.parse_manifest(raw, None, digest_algorithm=digest.algorithm).media_type
        except errors.RegistryError:
            return None
        return FetchedManifest(raw, media_type, str(digest))

    async def blob(self, digest: str, max_bytes: int) -> bytes | None:
        try:
            d = Digest.parse(digest)
            if not await self.repos.blob_linked(self.name, d):
                return None
            return await self.store.read_bytes(d, limit=max_bytes)
        except errors.RegistryError:
            return None

    async def referrers(self, digest: str) -> list[dict[str, Any]] | None:
        try:
            subject = Digest.parse(digest)
        except errors.RegistryError:
            return []
        out: list[dict[str, Any]] = []
        for ref in await self.repos.list_referrers(self.name, subject, persist=self.persist):
            try:
                raw = await self.store.read_bytes(ref, limit=mf.MAX_MANIFEST_BYTES)
                parsed = mf.parse_manifest(raw, None, digest_algorithm=ref.algorithm)
            except errors.RegistryError:
                continue
            out.append(mf.referrer_descriptor(parsed))
        return out
