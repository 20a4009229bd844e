"""HTTP clients of the directory, accounting and auth APIs, always called with the user's own credential.

One ``httpx`` client (aiohttp transport) is shared by the whole process; ``UserApi`` binds it to one
signed-in user's session token for the length of a request, so the UI can never do what the API refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from httpx_aiohttp import HttpxAiohttpClient
from prometheus_client import Counter

__all__ = ["ApiError", "AuthApi", "ServiceApi", "UserApi", "create_http_client", "items", "q"]


class ApiError(Exception):
    """A management API said no (problem document ``{"detail", "code"}``) or could not be reached."""

    def __init__(self, status: int, detail: str, code: str = "", field: str | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.code = code
        self.field = field  # the field a 422 names (``slug``, ``limits.requests_per_minute``)


API_CALLS = Counter(
    "aqueduct_ui_api_calls_total",
    "Calls from the UI to the other services' APIs, by service base URL and answer status",
    ["service", "status"],
)


def q(segment: str) -> str:
    """One path segment, escaped: model names such as ``org/model:tag`` must not change the route."""
    return quote(str(segment), safe="")


def items(answer: Any, key: str) -> list[dict[str, Any]]:
    """Lists come bare or wrapped (``{"teams": [...]}``); accept both."""
    if isinstance(answer, dict):
        answer = answer.get(key, answer.get("items", []))
    return list(answer or [])


def create_http_client(timeout: float) -> httpx.AsyncClient:
    # trust_env=False: service-to-service calls must not wander through an HTTP proxy from the environment.
    return HttpxAiohttpClient(timeout=timeout, trust_env=False, follow_redirects=False)


def _problem(response: httpx.Response) -> ApiError:
    detail, code, field = response.reason_phrase or "error", "", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw = body.get("detail", body.get("message", body.get("error", detail)))
        if isinstance(raw, list):  # FastAPI validation errors: keep the human messages
            raw = "; ".join(
                str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in raw
            )
        elif isinstance(raw, dict):
            raw = raw.get("message", str(raw))
        detail, code = str(raw), str(body.get("code", ""))
        field = str(body["field"]) if body.get("field") else None
    return ApiError(response.status_code, detail, code, field)


@dataclass(frozen=True)
class ServiceApi:
    """One service's API as seen by one credential."""

    http: httpx.AsyncClient
    base_url: str
    token: str | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        response = await self.raw(method, path, params=params, json=json, headers=headers)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def raw(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            response = await self.http.request(
                method, self.base_url.rstrip("/") + path, params=clean, json=json, headers=headers
            )
        except httpx.HTTPError as exc:
            raise ApiError(
                503, f"{self.base_url} is unreachable ({type(exc).__name__})", "unavailable"
            ) from exc
        if response.status_code >= 400:
            raise _problem(response)
        return response

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def get_page(self, path: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
        """One page of a list route and the number of rows matching in all (``X-Total-Count``)."""
        response = await self.raw("GET", path, params=params)
        rows = list(response.json() or [])
        return rows, int(response.headers.get("x-total-count", len(rows)))

    async def post(self, path: str, json: Any = None, headers: dict[str, str] | None = None) -> Any:
        return await self.request("POST", path, json=json if json is not None else {}, headers=headers)

    async def patch(self, path: str, json: Any) -> Any:
        return await self.request("PATCH", path, json=json)

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)


@dataclass(frozen=True)
class UserApi:
    """The directory and accounting APIs, bound to the signed-in user's session token."""

    directory: ServiceApi
    accounting: ServiceApi
    auth: ServiceApi | None = None  # local accounts (Admins)


@dataclass(frozen=True)
class AuthApi:
    """The auth service's sign-in endpoints (called without a bearer: the body carries the credential)."""

    service: ServiceApi

    # The UI is the auth service's trusted proxy: X-Forwarded-For names the browser, so the per-address
    # sign-in limit and the audit trail see the user's address rather than the UI's.
    @staticmethod
    def _forwarded(client_ip: str | None) -> dict[str, str]:
        return {"X-Forwarded-For": client_ip} if client_ip else {}

    async def sign_in(self, username: str, password: str, client_ip: str | None = None) -> dict[str, Any]:
        body = {"username": username, "password": password}
        return await self.service.post("/auth/token", body, self._forwarded(client_ip))

    async def change_password(
        self, username: str, password: str, new_password: str, client_ip: str | None = None
    ) -> None:
        body = {"username": username, "password": password, "new_password": new_password}
        await self.service.post("/auth/password", body, self._forwarded(client_ip))

    async def refresh(self, refresh_token: str, client_ip: str | None = None) -> dict[str, Any]:
        body = {"refresh_token": refresh_token}
        return await self.service.post("/auth/refresh", body, self._forwarded(client_ip))

    async def exchange(self, code: str, binding: str, client_ip: str | None = None) -> dict[str, Any]:
        body = {"code": code, "binding": binding}
        return await self.service.post("/auth/exchange", body, self._forwarded(client_ip))

    async def sign_out(self, refresh_token: str, client_ip: str | None = None) -> str:
        """End the session; for single sign-on, the provider's address that ends its session too."""
        body = {"refresh_token": refresh_token}
        answer = await self.service.post("/auth/logout", body, self._forwarded(client_ip))
        return str((answer or {}).get("end_session_url") or "")

    async def jwks(self) -> dict[str, Any]:
        return await self.service.get("/.well-known/jwks.json")
