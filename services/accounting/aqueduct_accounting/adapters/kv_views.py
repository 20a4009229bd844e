"""In-memory views of KV buckets other services write: model prices and the session signing keys."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from pydantic import ValidationError

from aqueduct_accounting.domain.pricing import PriceBook
from aqueduct_libs import names
from aqueduct_libs.bus import KVWatcher
from aqueduct_libs.sessions import SessionVerifier
from aqueduct_libs.snapshot import ModelRoute

__all__ = ["watch_jwks", "watch_model_prices"]

log = logging.getLogger(__name__)


def watch_model_prices(js: JetStreamContext, prices: PriceBook) -> KVWatcher:
    """Keeps ``prices`` in step with the ``model.*`` routes of the auth snapshot."""
    by_key: dict[str, str] = {}

    def on_put(key: str, value: bytes) -> None:
        if not key.startswith(names.SNAPSHOT_MODEL_PREFIX):
            return
        try:
            route = ModelRoute.model_validate_json(value)
        except ValidationError as exc:
            log.warning("ignoring an unreadable model route %s: %s", key, exc)
            return
        by_key[key] = route.name
        prices.put_route(route)

    def on_delete(key: str) -> None:
        name = by_key.pop(key, None)
        if name is not None:
            prices.remove_route(name)

    return KVWatcher(js, names.AUTH_SNAPSHOT_BUCKET, on_put, on_delete)


def watch_jwks(js: JetStreamContext, verifier: SessionVerifier) -> KVWatcher:
    def on_put(key: str, value: bytes) -> None:
        if key == "jwks":
            try:
                verifier.load_jwks(value)
            except Exception as exc:  # keep the last good keys
                log.warning("ignoring an unreadable JWKS document: %s", exc)

    return KVWatcher(js, names.AUTH_KEYS_BUCKET, on_put, lambda _key: None)
