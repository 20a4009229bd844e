"""JupyterHub's REST API: who owns a token (``GET {hub_api_url}/user``, ``Authorization: token <t>``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from aqueduct_auth.domain.errors import AuthError, DirectoryUnavailableError

__all__ = ["HubTokenInvalidError", "HubUnavailableError", "HubUser", "JupyterHubClient"]

log = logging.getLogger(__name__)


class HubTokenInvalidError(AuthError):
    def __init__(self, reason: str = "the JupyterHub token is invalid or expired") -> None:
        super().__init__(reason)


class HubUnavailableError(DirectoryUnavailableError):
    def __init__(self) -> None:
        AuthError.__init__(self, "JupyterHub did not answer; try again in a moment")


@dataclass(frozen=True)
class HubUser:
    name: str
    groups: list[str]
    admin: bool
    scopes: list[str]


class JupyterHubClient:
    def __init__(self, api_url: str, client: httpx.AsyncClient | None = None, timeout: float = 5.0) -> None:
        self._api_url = api_url.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def close(self) -> None:
        await self._client.aclose()

    async def identify(self, token: str) -> HubUser:
        try:
            answer = await self._client.get(
                f"{self._api_url}/user", headers={"Authorization": f"token {token}"}
            )
        except httpx.HTTPError as exc:
            log.warning("JupyterHub API unreachable: %s", type(exc).__name__)
            raise HubUnavailableError() from exc
        if answer.status_code in (401, 403, 404):
            raise HubTokenInvalidError()
        if answer.status_code != 200:
            log.warning("JupyterHub API answered %s", answer.status_code)
            raise HubUnavailableError()
        model = answer.json()
        if model.get("kind") != "user":
            # Service tokens name a hub service, not a person who could own usage.
            raise HubTokenInvalidError("only a JupyterHub user's token can be used here")
        return HubUser(
            name=str(model["name"]),
            groups=[str(g) for g in model.get("groups") or []],
            admin=bool(model.get("admin")),
            scopes=[str(s) for s in model.get("scopes") or []],
        )
