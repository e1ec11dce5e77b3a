"""Signature and scan policies that gate pulls, shared by the origin and the edge (no aiohttp).

Modules, one concern each:

- :mod:`regcore.policy.keys`: trusted public keys (cosign's PEM format) and their schemes;
- :mod:`regcore.policy.signatures`: cosign / sigstore-attachment / bundle / notation formats,
  parsed into what a key must have signed;
- :mod:`regcore.policy.reports`: Trivy JSON, SARIF and CycloneDX (VEX) reports into findings;
- :mod:`regcore.policy.evidence`: finding signatures and reports through an
  :class:`~regcore.policy.evidence.ArtifactSource` the server provides;
- :mod:`regcore.policy.verdicts`: verdicts, exemptions of artifacts, the verdict cache;
- :mod:`regcore.policy.gate`: :class:`~regcore.policy.gate.PolicyGate`, the one call a
  server's manifest handler makes;
- :mod:`regcore.policyconfig` (beside this package, so that reading a configuration without
  policies loads none of it): the ``policies`` configuration section.
"""

from __future__ import annotations

from regcore.policy.evidence import ArtifactSource, FetchedManifest
from regcore.policy.gate import PolicyGate
from regcore.policyconfig import PoliciesConfig, ScanPolicy, VerifyPolicy

__all__ = [
    "ArtifactSource",
    "FetchedManifest",
    "PoliciesConfig",
    "PolicyGate",
    "ScanPolicy",
    "VerifyPolicy",
]
