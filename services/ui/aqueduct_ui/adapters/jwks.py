"""Keeps the auth service's public keys current in a ``SessionVerifier``.

Primary source: the ``auth_keys`` KV bucket (key ``jwks``), watched so that a key rotation reaches the UI
without a restart. Fallback: the auth service's ``/.well-known/jwks.json``, fetched at most every few
seconds when a token names a key we do not hold (the UI starting before the bus delivers, or a bus outage).
With the bus, the ``auth_revoked`` bucket is watched as well, so the UI refuses a signed-out session's
access token at once; without it, the APIs refuse the token (401) and the UI sends the user to sign in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS

from aqueduct_libs import names
from aqueduct_libs.bus import KVWatcher, connect, ensure_topology
from aqueduct_libs.sessions import SessionVerifier, watch_revoked_sessions
from aqueduct_ui.adapters.api import ApiError

__all__ = ["JWKS_KEY", "KeyRing"]

log = logging.getLogger(__name__)

JWKS_KEY = "jwks"
_HTTP_FALLBACK_INTERVAL = 5.0


class KeyRing:
    def __init__(
        self, verifier: SessionVerifier, jwks_source: Callable[[], Awaitable[dict[str, Any]]]
    ) -> None:
        self.verifier = verifier
        self._jwks_source = jwks_source
        self._nc: NATS | None = None
        self._watcher: KVWatcher | None = None
        self._revoked: KVWatcher | None = None
        self._last_http_fetch = 0.0

    @property
    def ready(self) -> bool:
        return self.verifier.ready

    async def start(self, nats_url: str, replicas: int = 1) -> None:
        self._nc = await connect(nats_url, "aqueduct-ui")
        js = self._nc.jetstream()
        await ensure_topology(js, replicas)
        self._watcher = KVWatcher(js, names.AUTH_KEYS_BUCKET, self._on_put, self._on_delete)
        self._watcher.start()
        self._revoked = watch_revoked_sessions(js, self.verifier)
        self._revoked.start()

    async def stop(self) -> None:
        if self._watcher:
            await self._watcher.stop()
        if self._revoked:
            await self._revoked.stop()
        if self._nc and not self._nc.is_closed:
            await self._nc.drain()

    def _on_put(self, key: str, value: bytes) -> None:
        if key == JWKS_KEY:
            try:
                self.verifier.load_jwks(value)
            except (ValueError, KeyError) as exc:  # keep the last good keys
                log.error("ignoring an unreadable JWKS document: %s", exc)

    def _on_delete(self, key: str) -> None:
        # A deleted document is an operator's mistake more often than a revocation: keep the last keys.
        if key == JWKS_KEY:
            log.warning("the JWKS document was deleted from the %s bucket", names.AUTH_KEYS_BUCKET)

    async def fetch_over_http(self) -> bool:
        """Load the keys from the auth service; throttled. True when new keys were loaded."""
        now = time.monotonic()
        if now - self._last_http_fetch < _HTTP_FALLBACK_INTERVAL:
            return False
        self._last_http_fetch = now
        try:
            document = await self._jwks_source()
        except ApiError as exc:
            log.warning("could not fetch the JWKS from the auth service: %s", exc)
            return False
        self.verifier.load_jwks(document)
        return True
