"""The JupyterHub token bridge: a hub user's API token becomes a directory user and a session token.

The hub is asked once per token and cache window (``cache_seconds``), so a notebook that calls the
gateway in a loop costs the hub one request per window; a token revoked in the hub stops working here
within that window.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from aqueduct_auth.adapters.jupyterhub import HubTokenInvalidError, JupyterHubClient
from aqueduct_auth.adapters.keys import KeyRing
from aqueduct_auth.application.ports import Directory, Events
from aqueduct_auth.domain.sign_in import DirectoryUser, SignInRequest, session_claims
from aqueduct_libs.events import AuthEvent
from aqueduct_libs.tokens import hash_token

__all__ = ["HubExchange", "JupyterHubBridge"]


@dataclass(frozen=True)
class HubExchange:
    access_token: str
    expires_at: float
    user: DirectoryUser


class JupyterHubBridge:
    def __init__(
        self,
        hub: JupyterHubClient,
        directory: Directory,
        events: Events,
        keys: KeyRing,
        secret_key: bytes,
        access_token_ttl: int,
        cache_seconds: int,
        required_scope: str = "",
        admin_group: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._hub = hub
        self._directory = directory
        self._events = events
        self._keys = keys
        self._secret_key = secret_key
        self._ttl = access_token_ttl
        self._cache_seconds = min(cache_seconds, access_token_ttl // 2)
        self._required_scope = required_scope
        self._admin_group = admin_group
        self._clock = clock
        self._cache: dict[str, tuple[float, HubExchange]] = {}

    async def exchange(self, hub_token: str, client_ip: str | None) -> HubExchange:
        key = hash_token(hub_token, self._secret_key)
        now = self._clock()
        cached = self._cache.get(key)
        if cached and cached[0] > now:
            return cached[1]
        hub_user = await self._hub.identify(hub_token)
        if self._required_scope and self._required_scope not in hub_user.scopes:
            raise HubTokenInvalidError(f"the JupyterHub token lacks the scope {self._required_scope}")
        request = SignInRequest(
            subject=f"jupyterhub:{hub_user.name}",
            name=hub_user.name,
            groups=hub_user.groups,
            admin=bool(self._admin_group) and self._admin_group in hub_user.groups,
        )
        user = await self._directory.sign_in(request)
        session_id = uuid.uuid4().hex
        token = self._keys.current.sign(session_claims(user, session_id, int(now), self._ttl))
        result = HubExchange(token, now + self._ttl, user)
        self._remember(key, now + self._cache_seconds, result, now)
        await self._events.publish(
            AuthEvent(
                type="SignedIn",
                subject=request.subject,
                user_id=user.user_id,
                session_id=session_id,
                method="jupyterhub",
                client_ip=client_ip,
            )
        )
        return result

    def _remember(self, key: str, until: float, result: HubExchange, now: float) -> None:
        if len(self._cache) > 10_000:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[key] = (until, result)
