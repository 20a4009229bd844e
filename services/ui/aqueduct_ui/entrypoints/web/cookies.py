"""The UI's cookies: the session pair, the CSRF secret and the one-shot flash message.

CSRF uses a signed double-submit token: a random secret lives in an HttpOnly cookie, forms carry
HMAC(key, secret). A cross-site page can neither read the cookie nor compute the token, and a cookie
planted by a sibling domain is useless without the UI's key.

A flash message (notably a new token value, shown once) survives the POST-redirect-GET hop sealed with
AES-GCM in a short-lived HttpOnly cookie, and is dropped as soon as a page has shown it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "ACCESS_COOKIE",
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "FLASH_COOKIE",
    "REFRESH_COOKIE",
    "CookieKit",
    "Flash",
]

ACCESS_COOKIE = "aq_session"
REFRESH_COOKIE = "aq_refresh"
CSRF_COOKIE = "aq_csrf"
FLASH_COOKIE = "aq_flash"
CSRF_FIELD = "csrf_token"
_FLASH_MAX_AGE = 120


@dataclass(frozen=True)
class Flash:
    """A message for the next page. ``secret`` is a token value the user must copy now."""

    level: str  # "success" | "error" | "info"
    message: str
    secret: str | None = None
    secret_label: str | None = None
    # A refused form: {"action", "values", "field", "message"}, so the page shows the message next to
    # the field and keeps what the user typed (see ``refused_form``).
    form: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Flash:
        raw: dict[str, Any] = json.loads(data)
        form = raw.get("form")
        return cls(
            str(raw["level"]),
            str(raw["message"]),
            raw.get("secret"),
            raw.get("secret_label"),
            form if isinstance(form, dict) else None,
        )


class CookieKit:
    def __init__(self, secret_key: bytes, force_secure: bool, refresh_max_age: int) -> None:
        self._csrf_key = hmac.new(secret_key, b"aqueduct-ui/csrf", hashlib.sha256).digest()
        self._aead = AESGCM(hmac.new(secret_key, b"aqueduct-ui/flash", hashlib.sha256).digest())
        self._force_secure = force_secure
        self._refresh_max_age = refresh_max_age

    # --- CSRF -------------------------------------------------------------------------------------
    @staticmethod
    def new_csrf_secret() -> str:
        return secrets.token_urlsafe(32)

    def csrf_token(self, csrf_secret: str) -> str:
        return hmac.new(self._csrf_key, csrf_secret.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, csrf_secret: str | None, submitted: str | None) -> bool:
        if not csrf_secret or not submitted:
            return False
        return hmac.compare_digest(self.csrf_token(csrf_secret), submitted)

    # --- flash ------------------------------------------------------------------------------------
    def seal(self, flash: Flash) -> str:
        nonce = os.urandom(12)
        return base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, flash.to_json(), None)).decode()

    def unseal(self, sealed: str | None) -> Flash | None:
        if not sealed:
            return None
        try:
            blob = base64.urlsafe_b64decode(sealed.encode())
            return Flash.from_json(self._aead.decrypt(blob[:12], blob[12:], None))
        except (InvalidTag, ValueError, TypeError):
            return None

    # --- setting cookies --------------------------------------------------------------------------
    def _secure(self, request: Request) -> bool:
        return self._force_secure or request.url.scheme == "https"

    def _set(self, request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self._secure(request),
        )

    def set_session(self, request: Request, response: Response, pair: dict[str, Any]) -> None:
        expires_in = int(pair.get("expires_in") or 900)
        self._set(request, response, ACCESS_COOKIE, pair["access_token"], expires_in)
        if pair.get("refresh_token"):
            self._set(request, response, REFRESH_COOKIE, pair["refresh_token"], self._refresh_max_age)

    def clear_session(self, response: Response) -> None:
        """Sign-out: both cookies go."""
        response.delete_cookie(ACCESS_COOKIE, path="/")
        response.delete_cookie(REFRESH_COOKIE, path="/")

    @staticmethod
    def clear_access(response: Response) -> None:
        """Drop a dead access token but keep the refresh cookie: when two tabs refresh at once, the
        loser's answer must not wipe the winner's fresh session (the auth service refuses the loser)."""
        response.delete_cookie(ACCESS_COOKIE, path="/")

    def set_csrf(self, request: Request, response: Response, csrf_secret: str) -> None:
        self._set(request, response, CSRF_COOKIE, csrf_secret, None)

    def set_flash(self, request: Request, response: Response, flash: Flash) -> None:
        self._set(request, response, FLASH_COOKIE, self.seal(flash), _FLASH_MAX_AGE)

    @staticmethod
    def clear_flash(response: Response) -> None:
        response.delete_cookie(FLASH_COOKIE, path="/")
