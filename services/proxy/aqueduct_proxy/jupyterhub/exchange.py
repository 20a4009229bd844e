"""The auth service's JupyterHub exchange, as the proxy calls it: a hub token in, a directory user id out."""

from __future__ import annotations

import logging

import aiohttp

__all__ = ["AuthExchangeClient", "AuthUnreachable", "HubTokenRefused"]

log = logging.getLogger(__name__)


class HubTokenRefused(Exception):
    """The auth service answered: this token does not sign anyone in (401) or not here (403)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class AuthUnreachable(Exception):
    """No verdict: the auth service, the hub or the directory did not answer."""


# What a request on a kept-alive connection the server has just closed fails with, before any answer.
_STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionResetError)


class AuthExchangeClient:
    def __init__(self, auth_url: str, timeout: float) -> None:
        self._url = auth_url.rstrip("/") + "/auth/jupyterhub/exchange"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def exchange(self, hub_token: str) -> str:
        """The directory user id of the token's hub user; HubTokenRefused or AuthUnreachable."""
        if self._session is None:
            raise AuthUnreachable("the exchange client is not started")
        for attempt in (1, 2):
            try:
                async with self._session.post(self._url, json={"token": hub_token}) as answer:
                    status = answer.status
                    try:
                        body = await answer.json(content_type=None)
                    except ValueError:  # not JSON: a gateway page in front of the auth service, say
                        body = None
                break
            except (aiohttp.ClientError, TimeoutError) as exc:
                # A kept-alive connection the auth service closed as this request went out on it (its
                # idle timeout): the request never reached it. Once more, on a fresh connection; the
                # exchange is a look-up, the same answer however often it is asked.
                if attempt == 1 and isinstance(exc, _STALE_CONNECTION):
                    continue
                log.warning("auth service unreachable for a JupyterHub exchange: %s", type(exc).__name__)
                raise AuthUnreachable(type(exc).__name__) from exc
        body = body if isinstance(body, dict) else {}
        detail = str(body.get("detail") or "")
        if status == 200 and isinstance(body.get("user"), dict) and body["user"].get("user_id"):
            return str(body["user"]["user_id"])
        if status == 401 or (status == 403 and body.get("code") == "sign_in_refused"):
            raise HubTokenRefused(status, detail)
        # 403 "forbidden" means the auth service has its bridge off: a configuration mistake, not a verdict.
        log.warning("JupyterHub exchange answered %s (%s)", status, detail or "no detail")
        raise AuthUnreachable(f"status {status}")
