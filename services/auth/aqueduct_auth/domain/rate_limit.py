"""Sliding-window limit on sign-in attempts, per username and per client address.

Kept in memory: exact for one auth process. Several auth processes each keep their own windows, so the
effective limit multiplies by their number (acceptable for sign-in, where the password hash is the real
brake; move the windows to Valkey if that matters).
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["AttemptLimiter"]


class AttemptLimiter:
    def __init__(self, limit: int, window_seconds: float) -> None:
        self._limit = limit
        self._window = window_seconds
        self._attempts: dict[str, deque[float]] = {}

    def check(self, key: str, now: float) -> int:
        """Record one attempt for ``key``; answer 0 when allowed, else seconds until the next is."""
        attempts = self._attempts.setdefault(key, deque())
        while attempts and attempts[0] <= now - self._window:
            attempts.popleft()
        if len(attempts) >= self._limit:
            return max(1, math.ceil(attempts[0] + self._window - now))
        attempts.append(now)
        self._prune(now)
        return 0

    def _prune(self, now: float) -> None:
        # Bound memory under a spray of usernames: drop keys whose attempts have all expired.
        if len(self._attempts) < 10_000:
            return
        for key in [k for k, v in self._attempts.items() if not v or v[-1] <= now - self._window]:
            del self._attempts[key]
