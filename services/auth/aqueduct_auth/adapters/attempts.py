"""Sign-in attempt windows shared by every auth process, in the ``auth_attempts`` NATS KV bucket.

One key per username or client address, holding the attempts of the current window (JSON list of unix
times). Each check is a read and a compare-and-set on the entry's revision, retried on a conflict, so
concurrent attempts on several processes are all counted: the limit is exact, not multiplied by the
number of processes. The bus is what the auth service needs anyway (the directory answers sign-ins over
it), so this adds no new dependency; while it is unreachable, an in-process limiter with the same policy
stands in (logged once), rather than refusing every sign-in.
"""

from __future__ import annotations

import asyncio
import json
import logging

from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError

from aqueduct_auth.domain.rate_limit import AttemptLimiter, admit
from aqueduct_libs import names

__all__ = ["SharedAttemptLimiter"]

log = logging.getLogger(__name__)

# A conflict means another process recorded an attempt on the same key meanwhile: read again and retry.
MAX_CONFLICTS = 20


class SharedAttemptLimiter:
    def __init__(self, js: JetStreamContext, fallback: AttemptLimiter, timeout: float = 1.0) -> None:
        self._js = js
        self._fallback = fallback
        self._timeout = timeout
        self._degraded = False

    @property
    def degraded(self) -> bool:
        """True while the in-process fallback is counting (the bucket was unreachable last time)."""
        return self._degraded

    async def check(self, key: str, now: float) -> int:
        """Record one attempt for ``key``; answer 0 when allowed, else seconds until the next is."""
        try:
            retry_after = await asyncio.wait_for(self._check_shared(names.kv_safe(key), now), self._timeout)
        except Exception as exc:  # the bus is unreachable: count here rather than refuse everyone
            if not self._degraded:
                log.warning(
                    "sign-in attempt limits fall back to this process only: the %s bucket is unreachable (%s)",
                    names.AUTH_ATTEMPTS_BUCKET,
                    type(exc).__name__,
                )
                self._degraded = True
            return self._fallback.check(key, now)
        if self._degraded:
            log.info("sign-in attempt limits are shared again (%s bucket)", names.AUTH_ATTEMPTS_BUCKET)
            self._degraded = False
        return retry_after

    async def _check_shared(self, key: str, now: float) -> int:
        kv = await self._js.key_value(names.AUTH_ATTEMPTS_BUCKET)
        for _ in range(MAX_CONFLICTS):
            try:
                entry = await kv.get(key)
                attempts, revision = json.loads(entry.value or b"[]"), entry.revision or 0
            except KeyDeletedError as exc:
                attempts, revision = [], exc.entry.revision if exc.entry else 0
            except KeyNotFoundError:
                attempts, revision = [], 0
            retry_after, keep = admit(attempts, self._fallback.limit, self._fallback.window, now)
            if retry_after:
                return retry_after  # nothing recorded: the stored window stays as it is
            try:
                await kv.update(key, json.dumps(keep).encode(), last=revision)
            except KeyWrongLastSequenceError:
                continue
            return 0
        raise RuntimeError(f"sign-in attempts on one key changed {MAX_CONFLICTS} times while being counted")
