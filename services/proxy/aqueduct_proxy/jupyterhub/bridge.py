"""Serving a JupyterHub token as its directory user: one exchange per token and window, then lookups only.

Verdicts are kept by the token's keyed hash, never by its value. An accepted token is served from the
user's own grant (snapshot key ``user.<id>``), copied into the snapshot's token grants under the hub
token's hash on every request, so limit, model and terms changes apply at once and a deactivated user
(whose ``user.<id>`` key the directory deletes) is refused at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aqueduct_libs.tokens import hash_token
from aqueduct_proxy.domain.errors import InvalidTokenError, ProxyError
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.jupyterhub.exchange import AuthUnreachable, HubTokenRefused
from aqueduct_proxy.jupyterhub.users import UserGrants

__all__ = ["AuthUnavailableError", "HubAccountRefusedError", "HubBridge"]

log = logging.getLogger(__name__)

Exchange = Callable[[str], Awaitable[str]]


class AuthUnavailableError(ProxyError):
    status = 503
    type = "server_error"
    code = "auth_unavailable"


class HubAccountRefusedError(ProxyError):
    """The hub knows the token, but the directory does not let its user in (no org mapped, removed)."""

    status = 403
    type = "invalid_request_error"
    code = "account_not_allowed"


_UNAVAILABLE = "JupyterHub tokens cannot be checked right now; please try again shortly."


@dataclass(frozen=True, slots=True)
class _Verdict:
    until: float  # monotonic time; 0 for an answer that is not remembered
    user_id: str | None = None  # set when accepted
    status: int = 0  # 401 or 403 when refused, 503 when no verdict could be had
    detail: str = ""


class HubBridge:
    def __init__(
        self,
        snapshot: Snapshot,
        exchange: Exchange,
        secret_key: bytes,
        *,
        cache_seconds: float = 60.0,
        refusal_cache_seconds: float = 10.0,
        user_wait_seconds: float = 5.0,
        on_exchange: Callable[[str], None] = lambda outcome: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self._exchange = exchange
        self._secret_key = secret_key
        self._cache_seconds = cache_seconds
        self._refusal_seconds = refusal_cache_seconds
        self._user_wait = user_wait_seconds
        self._on_exchange = on_exchange
        self._clock = clock
        self.users = UserGrants()
        self._verdicts: dict[str, _Verdict] = {}  # keyed hash of a hub token -> what the auth service said
        self._inflight: dict[str, asyncio.Task[_Verdict]] = {}
        self._next_sweep = 0.0

    # -- the users' own grants (KV keys user.<id>) ------------------------------------------------------

    def on_user_put(self, key: str, value: bytes) -> None:
        self.users.on_user_put(key, value)

    def on_user_delete(self, key: str) -> None:
        self.users.on_user_delete(key)

    # -- the request path -------------------------------------------------------------------------------

    async def admit(self, bearer: str) -> None:
        """Make ``bearer`` authenticate as its hub user's grant, or raise the answer the client gets.

        Aqueduct API tokens the snapshot knows pass untouched.
        """
        token_hash = hash_token(bearer, self._secret_key)
        verdict = self._verdicts.get(token_hash)
        if verdict is None and token_hash in self._snapshot.grants:
            return
        if verdict is None or verdict.until <= self._clock():
            task = self._inflight.get(token_hash)
            if task is None:
                # One exchange per token however many requests arrive at once; shielded so a client
                # that hangs up does not cancel the answer the others wait for.
                task = asyncio.create_task(self._ask(token_hash, bearer), name="jupyterhub-exchange")
                self._inflight[token_hash] = task
            verdict = await asyncio.shield(task)
        self._apply(token_hash, verdict)

    async def _ask(self, token_hash: str, bearer: str) -> _Verdict:
        try:
            try:
                user_id = await self._exchange(bearer)
            except HubTokenRefused as exc:
                self._on_exchange("refused")
                return self._remember(
                    token_hash, _Verdict(self._clock() + self._refusal_seconds, None, exc.status, exc.detail)
                )
            except AuthUnreachable:
                self._on_exchange("unavailable")
                return _Verdict(0.0, status=503, detail=_UNAVAILABLE)
            self._on_exchange("accepted")
            if not await self._user_arrives(user_id):
                log.warning(
                    "the grant of user %s did not reach this proxy within %.1fs", user_id, self._user_wait
                )
                return _Verdict(
                    0.0,
                    status=503,
                    detail="Your account is being set up in the gateway; please try again in a few seconds.",
                )
            return self._remember(token_hash, _Verdict(self._clock() + self._cache_seconds, user_id))
        finally:
            self._inflight.pop(token_hash, None)

    async def _user_arrives(self, user_id: str) -> bool:
        # A first sign-in provisions the user; the directory's projection reaches us a moment later.
        deadline = self._clock() + self._user_wait
        while user_id not in self.users:
            if self._clock() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def _remember(self, token_hash: str, verdict: _Verdict) -> _Verdict:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        self._verdicts[token_hash] = verdict
        return verdict

    def _sweep(self, now: float) -> None:
        """Forget expired verdicts (and the grants they put in place), at most once per window."""
        expired = [h for h, v in self._verdicts.items() if v.until <= now and h not in self._inflight]
        for token_hash in expired:
            del self._verdicts[token_hash]
            self._snapshot.grants.pop(token_hash, None)
        self._next_sweep = now + max(self._cache_seconds, self._refusal_seconds, 1.0)

    def _apply(self, token_hash: str, verdict: _Verdict) -> None:
        if verdict.user_id is not None:
            grant = self.users.get(verdict.user_id)
            if grant is not None:
                self._snapshot.grants[token_hash] = grant
                return
            self._snapshot.grants.pop(token_hash, None)
            raise InvalidTokenError(
                "Incorrect API key provided: the user of this JupyterHub token is deactivated."
            )
        self._snapshot.grants.pop(token_hash, None)
        if verdict.status == 401:
            raise InvalidTokenError(
                f"Incorrect API key provided: {verdict.detail or 'invalid JupyterHub token'}."
            )
        if verdict.status == 403:
            raise HubAccountRefusedError(verdict.detail or "This JupyterHub user may not use the gateway.")
        raise AuthUnavailableError(verdict.detail or _UNAVAILABLE)

    @property
    def remembered(self) -> int:
        """How many hub tokens have a verdict in memory (for tests and metrics)."""
        return len(self._verdicts)
