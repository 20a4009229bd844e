"""What the files, batches and MCP routes need from their host application.

In the proxy these routes sit behind its own error middleware; ``openai_error_middleware`` gives the same
mapping to an application that hosts them alone (the batch worker's health app, tests).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from aqueduct_libs.snapshot import TokenGrant
from aqueduct_proxy.domain.errors import ProxyError

__all__ = ["Authenticate", "error_response", "json_response", "openai_error_middleware"]

log = logging.getLogger(__name__)

# ``Gateway.authenticate``: the Authorization header in, the token's grant out (or an InvalidTokenError).
Authenticate = Callable[[str | None], TokenGrant]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(value: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")


def error_response(error: ProxyError) -> web.Response:
    return web.Response(
        body=orjson.dumps(error.body()),
        status=error.status,
        headers=error.headers,
        content_type="application/json",
    )


@web.middleware
async def openai_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProxyError as error:
        return error_response(error)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unexpected error on %s", request.path)
        return error_response(ProxyError("The gateway failed to handle the request."))
