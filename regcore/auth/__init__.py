"""Authentication for registries: JWT bearer tokens and scopes (:mod:`.tokens`).

Importing :mod:`regcore.auth.tokens` needs ``pyjwt`` and ``cryptography``; the upstream client
(:mod:`regcore.client`) does not import this package.
"""

from __future__ import annotations
