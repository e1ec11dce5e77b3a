"""The origin's web UI at ``/ui/``: server-rendered pages behind the API's own access rules.

:func:`install` mounts it (see :mod:`origin.ui.webapp`); :mod:`origin.ui.keys` names the
application keys through which signature/scan policies and the inventory plug in.
"""

from __future__ import annotations

from origin.ui.keys import INVENTORY_SOURCE, TRUST_SOURCE
from origin.ui.webapp import install

__all__ = ["INVENTORY_SOURCE", "TRUST_SOURCE", "install"]
