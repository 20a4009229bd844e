"""API token values: generation, keyed hashing and previews.

A token's value exists only in the answer to create or regenerate. Everything else (the event store,
the KV snapshot, logs) sees the keyed hash (HMAC-SHA256 with the deployment's secret key) or the preview.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["TOKEN_PREFIX", "generate_token", "hash_token", "preview_token"]

TOKEN_PREFIX = "aq-"


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(value: str, key: bytes) -> str:
    """Keyed hash of a token value. The same key must be configured in the directory and the proxy."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def preview_token(value: str) -> str:
    return f"{value[:7]}...{value[-4:]}"
