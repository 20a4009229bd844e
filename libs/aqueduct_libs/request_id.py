"""``x-request-id`` on every answer of every service, and in the logs of the work done for it.

A client's own ``x-request-id`` is kept when it is sane (1 to 128 characters of letters, digits and
``-_.:``), so a caller can follow its request through the gateway; anything else is replaced by a new id.
The id of the request being served is in ``current_request_id()`` (a context variable, so it follows the
request into tasks it starts) and in every log line (``RequestIdLogFilter``).

One helper per HTTP framework, the same rule in both: ``add_request_ids`` for the FastAPI/Starlette
services (directory, auth, accounting, ui) and ``setup_aiohttp_request_ids`` for the aiohttp ones (proxy,
batch worker health app).
"""

from __future__ import annotations

import logging
import os
import re
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aiohttp is a dependency of the services that use it, not of libs
    from aiohttp import web

__all__ = [
    "HEADER",
    "RequestIdLogFilter",
    "RequestIdMiddleware",
    "add_request_ids",
    "aiohttp_request_id",
    "current_request_id",
    "enter_request",
    "leave_request",
    "new_request_id",
    "request_id_of",
    "setup_aiohttp_request_ids",
]

HEADER = "x-request-id"
_SANE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_current: ContextVar[str | None] = ContextVar("aqueduct_request_id", default=None)


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


def request_id_of(value: str | None) -> str:
    """The client's value when it is sane, else a new id."""
    if value and _SANE.fullmatch(value):
        return value
    return new_request_id()


def current_request_id() -> str | None:
    """The id of the request this code runs for (None outside a request)."""
    return _current.get()


def enter_request(request_id: str) -> Token[str | None]:
    """Make ``request_id`` the current one (a server that is neither ASGI nor aiohttp: the proxy's lean
    front end); ``leave_request`` with the token when the request is over."""
    return _current.set(request_id)


def leave_request(token: Token[str | None]) -> None:
    _current.reset(token)


class RequestIdLogFilter(logging.Filter):
    """Gives every record a ``request_id`` attribute ("-" outside a request) for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current.get() or "-"
        return True


class RequestIdMiddleware:
    """Pure ASGI middleware (streams pass through untouched): the id in, the header out. Put it around
    the whole application (``add_request_ids``), so that the 500 of an unexpected error carries it too."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)
        request_id = request_id_of(given.decode("latin-1") if given is not None else None)
        scope.setdefault("state", {})["request_id"] = request_id
        token = _current.set(request_id)

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)


_aiohttp_key: Any = None  # web.RequestKey[str], made at the first setup (libs does not import aiohttp)


def aiohttp_request_id(request: web.Request) -> str | None:
    """The id ``setup_aiohttp_request_ids`` gave this request."""
    return request.get(_aiohttp_key) if _aiohttp_key is not None else None


def add_request_ids(app: Any) -> None:
    """Wrap a Starlette/FastAPI app's whole middleware stack, its outermost error handler included
    (``add_middleware`` would place it inside, and a 500 would leave without the header)."""
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: RequestIdMiddleware(build())


def setup_aiohttp_request_ids(app: web.Application) -> None:
    """The outermost middleware of an aiohttp app picks the id; every prepared answer carries it
    (``on_response_prepare`` also reaches streams a handler prepares itself, and error answers)."""
    global _aiohttp_key
    from aiohttp import web

    if _aiohttp_key is None:
        _aiohttp_key = web.RequestKey("aqueduct_request_id", str)
    key = _aiohttp_key

    @web.middleware
    async def request_ids(request: web.Request, handler: Any) -> web.StreamResponse:
        request_id = request_id_of(request.headers.get(HEADER))
        request[key] = request_id
        token = _current.set(request_id)
        try:
            return await handler(request)
        finally:
            _current.reset(token)

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        request_id = request.get(key) or request_id_of(request.headers.get(HEADER))
        response.headers[HEADER] = request_id

    app.middlewares.insert(0, request_ids)
    app.on_response_prepare.append(stamp)
