"""Failed-login throttling: per (user, client address) and per client address, in a window.

:meth:`LoginLimiter.retry_after` is asked *before* a password is checked; while either count
has reached its limit within ``window`` seconds the answer is the seconds until the oldest
counted failure leaves the window, and the caller answers 429 ``TOOMANYREQUESTS`` with
``Retry-After`` without checking the password (so a blocked guesser learns nothing).

Keys are deliberately per address: a user's own login from another address is never blocked
by someone else's failures (no lock-out of a victim by a stranger). A success clears that
(user, address) count. Memory is bounded: at most ``max_keys`` keys, the stalest dropped.
Not thread-safe (one event loop owns it).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["LoginLimiter"]

_ANY_USER = "\x00any"  # the per-address count's key (no login name contains NUL)


class LoginLimiter:
    """See the module docstring. ``per_user``/``per_address`` of 0 disable that limit."""

    def __init__(
        self,
        *,
        per_user: int = 5,
        per_address: int = 20,
        window: float = 300.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, user: str, address: str) -> int | None:
        """Seconds to wait (>= 1) if ``user`` from ``address`` is blocked, else None."""
        now = self._clock()
        waits: list[float] = []
        for key, limit in (
            ((user, address), self.per_user),
            ((_ANY_USER, address), self.per_address),
        ):
            if limit <= 0:
                continue
            times = self._recent(key, now)
            if times is not None and len(times) >= limit:
                waits.append(times[-limit] + self.window - now)
        if not waits:
            return None
        return max(1, math.ceil(max(waits)))

    def failed(self, user: str, address: str) -> None:
        """Count one failed login of ``user`` from ``address``."""
        now = self._clock()
        for key in ((user, address), (_ANY_USER, address)):
            times = self._failures.get(key)
            if times is None:
                times = self._failures[key] = deque(maxlen=max(self.per_user, self.per_address, 1))
            else:
                self._failures.move_to_end(key)
            times.append(now)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, user: str, address: str) -> None:
        """Forget ``user``'s failures from ``address`` (the address's own count stays)."""
        self._failures.pop((user, address), None)
