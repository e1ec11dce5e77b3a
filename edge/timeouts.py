"""Bounds on how long a request made on a client's behalf may wait for an upstream.

``bounded(awaitable, timeout)`` awaits with a deadline and turns the timeout into the OCI-style
:class:`regcore.errors.UpstreamTimeout` (504); ``deadline(upstream)`` is the whole budget for one
upstream exchange (connect + read timeouts of that upstream's config).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol, TypeVar

from regcore import errors

_T = TypeVar("_T")


class HasTimeouts(Protocol):
    connect_timeout: float
    read_timeout: float


async def bounded(awaitable: Awaitable[_T], timeout: float) -> _T:
    """``await awaitable`` for at most ``timeout`` seconds; raises ``UpstreamTimeout`` after."""
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError:
        raise errors.UpstreamTimeout({"timeout_s": timeout}) from None


def deadline(upstream: HasTimeouts) -> float:
    """Seconds one upstream exchange may take in all (connect + read timeouts)."""
    return float(upstream.connect_timeout) + float(upstream.read_timeout)
