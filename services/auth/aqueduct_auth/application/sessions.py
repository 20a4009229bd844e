"""Sessions: sign a user in once the identity is established, refresh, sign out, one-time SSO codes.

A session is a row (its id is the ``sid`` claim) holding the sign-in request, so a refresh asks the
directory again and the new access token carries the user's current roles. Refresh tokens rotate on
every use; presenting a spent one again means it was copied, and the whole session is revoked.
A revoked session is also announced (``RevokedSessions``), so its access tokens stop working everywhere
at once instead of when they expire.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from aqueduct_auth.adapters.keys import KeyRing
from aqueduct_auth.adapters.store import AuthStore
from aqueduct_auth.application.ports import Directory, Events, RevokedSessions
from aqueduct_auth.domain.errors import (
    ExchangeCodeInvalidError,
    RefreshTokenInvalidError,
    SignInRefusedError,
)
from aqueduct_auth.domain.sign_in import DirectoryUser, SignInRequest, session_claims
from aqueduct_libs.events import AuthEvent
from aqueduct_libs.tokens import hash_token

__all__ = ["SessionPolicy", "Sessions", "TokenPair"]

REFRESH_TOKEN_PREFIX = "aqr-"
EXCHANGE_CODE_PREFIX = "aqc-"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"


@dataclass(frozen=True)
class SessionPolicy:
    access_token_ttl: int
    refresh_token_ttl: int
    exchange_code_ttl: int
    secret_key: bytes
    # A spent refresh token presented again within this many seconds is a race between tabs, not theft.
    reuse_grace_seconds: float = 10.0


class Sessions:
    def __init__(
        self,
        store: AuthStore,
        keys: KeyRing,
        directory: Directory,
        events: Events,
        policy: SessionPolicy,
        revoked: RevokedSessions,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._revoked = revoked
        self._keys = keys
        self._directory = directory
        self._events = events
        self._policy = policy
        self._clock = clock

    async def sign_in(self, request: SignInRequest, method: str, client_ip: str | None) -> TokenPair:
        """The identity is established (password, IdP, hub): resolve the user and open a session."""
        session_id, user = await self._open_session(request, method, client_ip)
        return self._issue(session_id, user)

    async def sign_in_with_code(
        self,
        request: SignInRequest,
        method: str,
        client_ip: str | None,
        binding: str,
        end_session_url: str = "",
    ) -> str:
        """Like ``sign_in``, but answers a one-time code the UI exchanges server-side for the tokens.

        ``binding`` is the SHA-256 (hex) of a secret that the browser which started the sign-in holds (the
        UI keeps it in a cookie): the code is only exchanged together with that secret, so a code that an
        attacker obtained for their own account cannot sign somebody else's browser in (login CSRF).

        ``end_session_url``: the identity provider's address that ends its session as well, handed back
        at sign-out."""
        session_id, _ = await self._open_session(request, method, client_ip)
        if end_session_url:
            self._store.add_end_session_url(session_id, end_session_url)
        code = EXCHANGE_CODE_PREFIX + secrets.token_urlsafe(32)
        self._store.add_exchange_code(
            self._hash(code), session_id, self._clock() + self._policy.exchange_code_ttl, binding
        )
        return code

    async def exchange(self, code: str, binding_secret: str) -> TokenPair:
        code_hash = self._hash(code)
        stored = self._store.find_exchange_code(code_hash)
        now = self._clock()
        if stored is None or stored.used_at is not None or stored.session_revoked or stored.expires_at < now:
            raise ExchangeCodeInvalidError()
        binding = self._store.exchange_code_binding(code_hash)
        presented = hashlib.sha256(binding_secret.encode()).hexdigest()
        # Not spent on a mismatch: the right browser can still finish its sign-in.
        if binding is None or not binding_secret or not hmac.compare_digest(binding, presented):
            raise ExchangeCodeInvalidError()
        # The directory answered a moment ago; ask again so the code carries no claims of its own.
        # Asked before spending: if the directory is down, the code still works on a retry.
        user = await self._resolve(stored.session_id, SignInRequest.model_validate(stored.sign_in))
        if not self._store.spend_exchange_code(code_hash, self._clock()):
            raise ExchangeCodeInvalidError()
        return self._issue(stored.session_id, user)

    async def refresh(self, refresh_token: str) -> TokenPair:
        token_hash = self._hash(refresh_token)
        stored = self._store.find_refresh_token(token_hash)
        now = self._clock()
        if stored is None or stored.session_revoked or stored.expires_at < now:
            raise RefreshTokenInvalidError()
        if stored.used_at is not None:
            if now - stored.used_at < self._policy.reuse_grace_seconds:
                # Two tabs refreshing at once: the loser is refused, the session lives on.
                raise RefreshTokenInvalidError()
            await self._reused(stored.session_id, stored.sign_in.get("subject", ""))
        # Asked before spending: if the directory is down, the same refresh token works on a retry.
        user = await self._resolve(stored.session_id, SignInRequest.model_validate(stored.sign_in))
        if not self._store.spend_refresh_token(token_hash, self._clock()):
            raise RefreshTokenInvalidError()  # lost a race against a concurrent refresh
        return self._issue(stored.session_id, user)

    async def _reused(self, session_id: str, subject: str) -> NoReturn:
        """A spent refresh token came back: it was copied. End the session for thief and owner alike."""
        self._end_session(session_id)
        await self._events.publish(
            AuthEvent(
                type="SignInFailed",
                subject=subject,
                session_id=session_id,
                method="refresh",
                reason="refresh_token_reused",
            )
        )
        raise RefreshTokenInvalidError()

    async def sign_out(self, refresh_token: str, client_ip: str | None) -> str:
        """Revoke the session of this refresh token. Unknown tokens are ignored: sign-out is idempotent.

        Returns where to send the browser so the identity provider ends its session too (RP-initiated
        logout; empty for local sign-ins and providers without it), else "Sign in with SSO" would sign
        the user straight back in."""
        stored = self._store.find_refresh_token(self._hash(refresh_token))
        if stored is None or stored.session_revoked:
            return ""
        self._end_session(stored.session_id)
        end_session_url = self._store.take_end_session_url(stored.session_id)
        await self._events.publish(
            AuthEvent(
                type="SignedOut",
                subject=stored.sign_in.get("subject", ""),
                session_id=stored.session_id,
                client_ip=client_ip,
            )
        )
        return end_session_url

    async def _open_session(
        self, request: SignInRequest, method: str, client_ip: str | None
    ) -> tuple[str, DirectoryUser]:
        try:
            user = await self._directory.sign_in(request)
        except SignInRefusedError as exc:
            await self._events.publish(
                AuthEvent(
                    type="SignInFailed",
                    subject=request.subject,
                    method=method,
                    client_ip=client_ip,
                    reason=f"refused: {exc.message}",
                )
            )
            raise
        session_id = uuid.uuid4().hex
        self._store.add_session(session_id, request.model_dump(), self._clock())
        await self._events.publish(
            AuthEvent(
                type="SignedIn",
                subject=request.subject,
                user_id=user.user_id,
                session_id=session_id,
                method=method,
                client_ip=client_ip,
            )
        )
        return session_id, user

    async def _resolve(self, session_id: str, request: SignInRequest) -> DirectoryUser:
        try:
            return await self._directory.sign_in(request.model_copy(update={"renewal": True}))
        except SignInRefusedError:
            # The directory no longer accepts this user (removed, group gone): end the session.
            self._end_session(session_id)
            raise

    def _end_session(self, session_id: str) -> None:
        now = self._clock()
        self._store.revoke_session(session_id, now)
        # Every access token of the session was issued by now, so none outlives now + its lifetime.
        self._revoked.session_ended(session_id, now + self._policy.access_token_ttl)

    def _issue(self, session_id: str, user: DirectoryUser) -> TokenPair:
        now = self._clock()
        access = self._keys.current.sign(
            session_claims(user, session_id, int(now), self._policy.access_token_ttl)
        )
        refresh = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._store.add_refresh_token(self._hash(refresh), session_id, now + self._policy.refresh_token_ttl)
        return TokenPair(access, refresh, self._policy.access_token_ttl)

    def _hash(self, value: str) -> str:
        return hash_token(value, self._policy.secret_key)
