"""The aiohttp middleware that lets a JupyterHub token through wherever an API key is accepted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from aqueduct_libs.tokens import TOKEN_PREFIX
from aqueduct_proxy.jupyterhub.bridge import HubBridge

__all__ = ["hub_token_middleware", "is_hub_token"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPERATIONAL = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})


def is_hub_token(authorization: str | None) -> bool:
    """Whether the bearer is one the bridge looks at (not an Aqueduct token)."""
    if authorization and authorization[:7].lower() == "bearer ":
        bearer = authorization[7:].strip()
        return bool(bearer) and not bearer.startswith(TOKEN_PREFIX)
    return False


def hub_token_middleware(bridge: HubBridge) -> Middleware:
    """Before any route authenticates: a bearer that is not an ``aq-`` token goes through the bridge.

    Aqueduct tokens cost one prefix check here; their lookup stays where it was (``Gateway.authenticate``).
    """

    @web.middleware
    async def jupyterhub_tokens(request: web.Request, handler: Handler) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        if is_hub_token(authorization) and request.path not in _OPERATIONAL:
            await bridge.admit(authorization[7:].strip())  # type: ignore[index]
        return await handler(request)

    return jupyterhub_tokens
