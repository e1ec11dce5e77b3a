"""The pull gate: may this manifest be served from this repository under the policies?

One :class:`PolicyGate` per server, built from :class:`~regcore.policyconfig.PoliciesConfig`.
A server calls :meth:`PolicyGate.check` from its manifest GET/HEAD handler with the repository,
the digest being served, an :class:`~regcore.policy.evidence.ArtifactSource` on that repository
and, when it has them, the manifest bytes. For the verify and the scan policy that match the
repository (mode not ``off``):

- a fresh verdict for ``(kind, policy, scope, digest)`` is reused (``ttl``; see
  :class:`~regcore.policy.verdicts.VerdictCache`); a manifest listed by an index that passed
  the same policy passes for ``children_ttl`` seconds (clients fetch the index first, then its
  platforms by digest; cosign signs the index);
- otherwise the verdict is reached once (concurrent checks of one key share the work): an
  artifact (:func:`~regcore.policy.verdicts.exemption`) passes; a verify policy needs a
  signature by one of its keys; a scan policy judges the newest report (evidence lives in a
  repository, so verdicts are per ``scope``: the repository, or whatever the server passes to
  tell repositories of different upstreams apart). Each evaluation calls
  ``on_evaluation(kind, policy)``;
- if the source fails while a verdict is known but stale, the stale verdict is used (and
  ``on_evaluation(kind, policy, "stale")`` called); with none, the source's error propagates;
- the outcome: ``allowed``; ``warned`` (mode ``warn``: served, logged at WARNING); ``denied``
  (mode ``enforce``): :class:`~regcore.errors.Denied` (403 DENIED) is raised with the message
  ``pull denied by <kind> policy '<name>': <reason>``. ``on_decision(kind, policy, outcome)``
  is called for each.

Nothing else is raised except ManifestUnknown (the digest has no manifest) and the source's
errors. Use from one event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from regcore import errors
from regcore.policy.evidence import ArtifactSource, ReportMemo, scan_reports, signature_messages
from regcore.policy.verdicts import (
    SignatureChecker,
    Verdict,
    VerdictCache,
    children_of,
    exemption,
    judge_scan,
    verify_signatures,
)
from regcore.policyconfig import PoliciesConfig, ScanPolicy, VerifyPolicy

if TYPE_CHECKING:
    from regcore.policy.evidence import FetchedManifest

__all__ = ["CHILDREN_TTL", "PolicyGate"]

log = logging.getLogger("quayside.policy")
CHILDREN_TTL = 600.0
Decision = Callable[[str, str, str], None]
Evaluation = Callable[..., None]
Policy = VerifyPolicy | ScanPolicy


class PolicyGate:
    """See the module docstring."""

    def __init__(
        self,
        config: PoliciesConfig,
        *,
        ttl: float,
        clock: Callable[[], float],
        on_decision: Decision | None = None,
        on_evaluation: Evaluation | None = None,
        children_ttl: float = CHILDREN_TTL,
    ) -> None:
        self.config = config
        self.clock = clock
        self.children_ttl = children_ttl
        self.verdicts = VerdictCache(ttl=ttl)
        self.checker = SignatureChecker()
        self.reports = ReportMemo()
        self._children: dict[tuple[str, ...], float] = {}
        self._running: dict[tuple[str, ...], asyncio.Future[Verdict]] = {}
        self._on_decision = on_decision
        self._on_evaluation = on_evaluation

    @property
    def active(self) -> bool:
        return self.config.active

    def policies_for(self, repository: str) -> list[tuple[str, Policy]]:
        """``(kind, policy)`` of the policies that judge pulls from ``repository``."""
        out: list[tuple[str, Policy]] = []
        verify = self.config.verify_for(repository)
        if verify is not None and verify.mode != "off":
            out.append(("verify", verify))
        scan = self.config.scan_for(repository)
        if scan is not None and scan.mode != "off":
            out.append(("scan", scan))
        return out

    async def check(
        self,
        repository: str,
        digest: str,
        source: ArtifactSource,
        manifest: bytes | None = None,
        *,
        scope: str | None = None,
    ) -> None:
        """Let the pull through, or raise Denied (see the module docstring). ``scope`` keys
        the verdicts (default: ``repository``)."""
        policies = self.policies_for(repository)
        if not policies:
            return
        body: list[bytes] = [manifest] if manifest is not None else []

        async def load() -> bytes:
            if not body:
                found: FetchedManifest | None = await source.manifest(digest)
                if found is None:
                    raise errors.ManifestUnknown({"digest": digest})
                body.append(found.body)
            return body[0]

        denials: list[errors.RegistryError] = []
        for kind, policy in policies:
            verdict = await self._verdict(kind, policy, scope or repository, digest, source, load)
            if verdict.ok:
                self._decided(kind, policy, "allowed")
                continue
            if policy.mode == "warn":
                self._decided(kind, policy, "warned")
                log.warning(
                    "pull served under a warn-mode policy it does not satisfy",
                    extra={
                        "policy": policy.name,
                        "kind": kind,
                        "repo": repository,
                        "digest": digest,
                        "reason": verdict.reason,
                    },
                )
                continue
            self._decided(kind, policy, "denied")
            denials.append(
                errors.Denied(
                    {"policy": policy.name, "kind": kind, "digest": digest},
                    message=f"pull denied by {kind} policy '{policy.name}': {verdict.reason}",
                )
            )
        if len(denials) == 1:
            raise denials[0]
        if denials:
            raise errors.RegistryErrors(denials)

    def _decided(self, kind: str, policy: Policy, outcome: str) -> None:
        if self._on_decision is not None:
            self._on_decision(kind, policy.name, outcome)

    async def _verdict(
        self,
        kind: str,
        policy: Policy,
        scope: str,
        digest: str,
        source: ArtifactSource,
        load: Callable[[], Awaitable[bytes]],
    ) -> Verdict:
        key = (kind, policy.name, scope, digest)
        now = self.clock()
        until = self._children.get(key)
        if until is not None and now < until:
            return Verdict(True, "listed by an index that passed")
        known = self.verdicts.get(key, now)
        if known is not None and known[1]:
            return known[0]
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            verdict = await self._evaluate(kind, policy, scope, digest, source, load)
        except errors.RegistryError as exc:
            if known is None or isinstance(exc, errors.ManifestUnknown):
                future.set_exception(exc)
                future.exception()  # retrieved: waiters (if any) re-raise it
                raise
            verdict = known[0]
            self._evaluated(kind, policy, "stale")
            log.warning(
                "policy evidence unavailable; using the last known verdict",
                extra={"policy": policy.name, "digest": digest, "error": exc.code},
            )
        except BaseException:
            future.cancel()
            raise
        else:
            self.verdicts.put(key, verdict, self.clock())
        finally:
            self._running.pop(key, None)
        future.set_result(verdict)
        return verdict

    def _evaluated(self, kind: str, policy: Policy, how: str = "evaluated") -> None:
        if self._on_evaluation is not None:
            self._on_evaluation(kind, policy.name, how)

    async def _evaluate(
        self,
        kind: str,
        policy: Policy,
        scope: str,
        digest: str,
        source: ArtifactSource,
        load: Callable[[], Awaitable[bytes]],
    ) -> Verdict:
        self._evaluated(kind, policy)
        body = await load()
        exempt = exemption(body)
        if exempt is not None:
            return Verdict(True, f"not an image: {exempt}")
        if isinstance(policy, VerifyPolicy):
            messages, notes = await signature_messages(source, digest, body)
            verdict = verify_signatures(policy, messages, notes, self.checker)
        else:
            reports, notes = await scan_reports(source, digest, self.reports)
            verdict = judge_scan(policy, reports, notes)
        if verdict.ok:
            self._allow_children((kind, policy.name, scope), body)
        return verdict

    def _allow_children(self, prefix: tuple[str, ...], body: bytes) -> None:
        children = children_of(body)
        if not children:
            return
        until = self.clock() + self.children_ttl
        now = self.clock()
        if len(self._children) > 50_000:  # drop expired entries before growing further
            self._children = {k: t for k, t in self._children.items() if t > now}
        for child in children:
            self._children[(*prefix, child)] = until
