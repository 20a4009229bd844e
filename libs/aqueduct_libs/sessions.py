"""Session tokens: short-lived ES256 JWTs issued by the auth service, verified everywhere else.

The auth service publishes its public keys as a JWKS document in the ``auth_keys`` KV bucket (key
``jwks``) and at ``/.well-known/jwks.json``. Other services keep the document in memory (watching the
bucket) and verify tokens locally, never calling the auth service per request.

When a session ends (sign-out, a stolen refresh token, a user the directory no longer accepts), the auth
service writes its id to the ``auth_revoked`` bucket; ``watch_revoked_sessions`` feeds that bucket into
the verifier, which then refuses every access token of the session although it has not expired yet.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import jwt
from nats.js import JetStreamContext
from pydantic import BaseModel, ConfigDict, Field

from aqueduct_libs import names
from aqueduct_libs.bus import KVWatcher

__all__ = [
    "SESSION_AUDIENCE",
    "SESSION_ISSUER",
    "InvalidSessionError",
    "SessionClaims",
    "SessionVerifier",
    "watch_revoked_sessions",
]

log = logging.getLogger(__name__)

SESSION_ISSUER = "aqueduct-auth"
SESSION_AUDIENCE = "aqueduct"
JWKS_KEY = "jwks"


class InvalidSessionError(Exception):
    """The session token is missing, malformed, expired, tampered with or signed by an unknown key."""


class SessionClaims(BaseModel):
    """What a session token says about its holder. Roles are a snapshot taken at sign-in."""

    model_config = ConfigDict(extra="ignore")

    sub: str  # directory user id
    sid: str  # session id
    name: str = ""
    email: str = ""
    org: str | None = None  # org id
    admin: bool = False
    org_admin: bool = False
    teams: list[str] = Field(default_factory=list)  # team ids the user belongs to
    team_admin: list[str] = Field(default_factory=list)  # team ids the user administers
    exp: int
    iat: int


# Ended sessions are forgotten once their last access token has expired; pruned at most this often.
PRUNE_INTERVAL_SECONDS = 60.0


class SessionVerifier:
    """Verifies session tokens against the current JWKS document (replaced whole on rotation), and refuses
    the tokens of sessions that have ended."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._keys: dict[str, Any] = {}
        self._revoked: dict[str, float] = {}  # session id -> when its last access token expires
        self._clock = clock
        self._next_prune = 0.0

    @property
    def ready(self) -> bool:
        return bool(self._keys)

    def load_jwks(self, document: bytes | str | dict[str, Any]) -> None:
        data = json.loads(document) if isinstance(document, bytes | str) else document
        keys: dict[str, Any] = {}
        for jwk in data.get("keys", []):
            keys[jwk["kid"]] = jwt.PyJWK(jwk).key
        self._keys = keys

    def revoke(self, session_id: str, until: float) -> None:
        """Refuse the tokens of ``session_id`` until ``until`` (unix time), when they expire anyway."""
        now = self._clock()
        if now >= self._next_prune:
            self._revoked = {sid: t for sid, t in self._revoked.items() if t > now}
            self._next_prune = now + PRUNE_INTERVAL_SECONDS
        if until > now:
            self._revoked[session_id] = max(until, self._revoked.get(session_id, 0.0))

    def forget(self, session_id: str) -> None:
        self._revoked.pop(session_id, None)

    @property
    def revoked_sessions(self) -> int:
        return len(self._revoked)

    def verify(self, token: str) -> SessionClaims:
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.get(header.get("kid", ""))
            if key is None:
                raise InvalidSessionError("session token signed by an unknown key")
            payload = jwt.decode(
                token,
                key,
                algorithms=["ES256"],
                audience=SESSION_AUDIENCE,
                issuer=SESSION_ISSUER,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except InvalidSessionError:
            raise
        except jwt.InvalidSignatureError as exc:  # a DecodeError too, but its own message is the clear one
            raise InvalidSessionError(str(exc)) from exc
        except jwt.DecodeError as exc:
            # PyJWT says "Not enough segments" or "Invalid header padding": the caller sent something else.
            raise InvalidSessionError("not a session token (malformed)") from exc
        except jwt.PyJWTError as exc:
            raise InvalidSessionError(str(exc)) from exc
        claims = SessionClaims.model_validate(payload)
        if self._revoked.get(claims.sid, 0.0) > self._clock():
            raise InvalidSessionError("the session has ended (signed out)")
        return claims


def watch_revoked_sessions(js: JetStreamContext, verifier: SessionVerifier) -> KVWatcher:
    """Mirror the ``auth_revoked`` bucket into ``verifier``; start it, and wait for ``ready`` before
    answering requests, so that a service started after a sign-out refuses that session too."""

    def on_put(key: str, value: bytes) -> None:
        try:
            until = float(value)
        except ValueError:
            log.warning("ignoring an unreadable entry %r of the %s bucket", key, names.AUTH_REVOKED_BUCKET)
            return
        verifier.revoke(key, until)

    return KVWatcher(js, names.AUTH_REVOKED_BUCKET, on_put, verifier.forget)
