"""Sliding-window limit on sign-in attempts, per username and per client address.

``admit`` is the rule, on the attempts of one key; ``AttemptLimiter`` applies it in memory (exact for one
auth process). The auth service keeps the windows in a NATS KV bucket shared by all its processes
(``adapters.attempts``) and falls back to an ``AttemptLimiter`` only while the bus is unreachable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["AttemptLimiter", "admit"]


def admit(attempts: Sequence[float], limit: int, window: float, now: float) -> tuple[int, list[float]]:
    """One more attempt at ``now``, given the earlier ones (oldest first).

    Answers ``(0, attempts to keep)`` when allowed, else ``(seconds until the next is, attempts to keep)``;
    a refused attempt is not recorded, so a client that waits ``Retry-After`` gets in."""
    recent = [t for t in attempts if t > now - window]
    if len(recent) >= limit:
        return max(1, math.ceil(recent[0] + window - now)), recent
    recent.append(now)
    return 0, recent


class AttemptLimiter:
    def __init__(self, limit: int, window_seconds: float) -> None:
        self.limit = limit
        self.window = window_seconds
        self._attempts: dict[str, list[float]] = {}

    def check(self, key: str, now: float) -> int:
        """Record one attempt for ``key``; answer 0 when allowed, else seconds until the next is."""
        retry_after, self._attempts[key] = admit(self._attempts.get(key, ()), self.limit, self.window, now)
        self._prune(now)
        return retry_after

    def _prune(self, now: float) -> None:
        # Bound memory under a spray of usernames: drop keys whose attempts have all expired.
        if len(self._attempts) < 10_000:
            return
        for key in [k for k, v in self._attempts.items() if not v or v[-1] <= now - self.window]:
            del self._attempts[key]
