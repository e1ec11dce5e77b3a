"""Typed keys of the web UI and its per-application state (no module-level mutable state).

Other parts of the origin plug in through two application keys, set on the origin's
application before it starts (in any order relative to :func:`origin.ui.install`):

* :data:`TRUST_SOURCE`: a :class:`~origin.ui.trust.TrustSource` (signature verdicts, scan
  summaries); absent, the UI shows "not configured";
* :data:`INVENTORY_SOURCE`: an :class:`~origin.ui.inventory.InventorySource`; absent, the
  operations inventory or the disk fallback (:func:`origin.ui.inventory.inventory_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from origin.ui.inventory import InventorySource
from origin.ui.inventorycache import InventoryCache
from origin.ui.trust import TrustSource
from origin.ui.viewer import UiAccess, Viewer

__all__ = ["INVENTORY_SOURCE", "NEXT", "TRUST_SOURCE", "UI", "VIEWER", "UiState"]

TRUST_SOURCE: web.AppKey[Any] = web.AppKey("origin_ui_trust", object)
INVENTORY_SOURCE: web.AppKey[Any] = web.AppKey("origin_ui_inventory", object)


@dataclass
class UiState:
    """What the UI's handlers share: access decisions and sessions, the origin's read-only
    flag, whether the origin serves TLS itself, its external host, the sources given to
    ``install`` and the inventory cache (:class:`~origin.ui.inventorycache.InventoryCache`)."""

    access: UiAccess
    readonly: bool
    tls: bool
    cache: InventoryCache
    external_host: str = ""  # host[:port] of ``http.host``, if configured
    trust_override: TrustSource | None = None
    inventory_override: InventorySource | None = None

    def trust(self, request: web.Request) -> TrustSource | None:
        if self.trust_override is not None:
            return self.trust_override
        found: TrustSource | None = request.config_dict.get(TRUST_SOURCE)
        return found

    def inventory(self, request: web.Request) -> InventorySource | None:
        if self.inventory_override is not None:
            return self.inventory_override
        found: InventorySource | None = request.config_dict.get(INVENTORY_SOURCE)
        return found


UI: web.AppKey[UiState] = web.AppKey("origin_ui", UiState)
VIEWER: web.RequestKey[Viewer] = web.RequestKey("origin_ui_viewer", Viewer)
NEXT: web.RequestKey[str] = web.RequestKey("origin_ui_next", str)
