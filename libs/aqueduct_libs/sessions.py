"""Session tokens: short-lived ES256 JWTs issued by the auth service, verified everywhere else.

The auth service publishes its public keys as a JWKS document in the ``auth_keys`` KV bucket (key
``jwks``) and at ``/.well-known/jwks.json``. Other services keep the document in memory (watching the
bucket) and verify tokens locally, never calling the auth service per request.
"""

from __future__ import annotations

import json
from typing import Any

import jwt
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SESSION_AUDIENCE",
    "SESSION_ISSUER",
    "InvalidSessionError",
    "SessionClaims",
    "SessionVerifier",
]

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


class SessionVerifier:
    """Verifies session tokens against the current JWKS document (replaced whole on rotation)."""

    def __init__(self) -> None:
        self._keys: dict[str, Any] = {}

    @property
    def ready(self) -> bool:
        return bool(self._keys)

    def load_jwks(self, document: bytes | str | dict[str, Any]) -> None:
        data = json.loads(document) if isinstance(document, bytes | str) else document
        keys: dict[str, Any] = {}
        for jwk in data.get("keys", []):
            keys[jwk["kid"]] = jwt.PyJWK(jwk).key
        self._keys = keys

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
        except jwt.PyJWTError as exc:
            raise InvalidSessionError(str(exc)) from exc
        return SessionClaims.model_validate(payload)
