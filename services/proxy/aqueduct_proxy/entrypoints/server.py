"""The proxy's HTTP server: aiohttp's, with OpenAI's error body for requests refused before any route.

aiohttp answers a request it cannot parse (a header line longer than the limit, a malformed request line)
itself, in plain text, before any middleware runs. Clients of the gateway are OpenAI clients: they get
``{"error": {...}}`` here too, with an ``x-request-id``, and 431 for headers that are too large.

Each connection starts with the lean front end (``entrypoints.front``), which serves the hot routes and
hands the connection to aiohttp's handler for anything else.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from aqueduct_libs.request_id import HEADER, new_request_id
from aqueduct_proxy.entrypoints.front import FrontEnd, FrontEndRules
from aqueduct_proxy.entrypoints.http import front_end_rules

__all__ = ["OpenAIErrorsRunner"]

log = logging.getLogger(__name__)


def _error(status: int, type_: str, code: str, message: str) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    response = web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={HEADER: new_request_id()},
    )
    response.force_close()  # the connection's framing cannot be trusted after a parse error
    return response


class _Handler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: an answer is under way, the connection is lost
            raise ConnectionError("Response is sent already, cannot send the error answer")
        if isinstance(exc, LineTooLong):
            answer = _error(
                431,
                "invalid_request_error",
                "request_header_fields_too_large",
                f"A request header (or the request line) is longer than the gateway accepts "
                f"({self.max_field_size} bytes).",
            )
        elif status >= 500:
            answer = _error(
                status, "server_error", "server_error", "The gateway failed to handle the request."
            )
        else:
            answer = _error(
                status, "invalid_request_error", "invalid_http_request", "The request is not valid HTTP."
            )
        # Not aiohttp's log line: it quotes the offending header, which may be a credential. The status
        # is the one answered (431 for a line too long, where aiohttp says 400).
        log.warning("refused an unreadable request (%s, %d)", type(exc).__name__, answer.status)
        return answer


class _Server(Server):
    front_end: FrontEndRules | None = None

    def __call__(self) -> RequestHandler:
        if self.front_end is not None:  # it hands the connection to ``handler()`` for what it does not serve
            return FrontEnd(self, self.front_end, self.handler)  # type: ignore[return-value]
        return self.handler()

    def handler(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class OpenAIErrorsRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer parse errors in OpenAI's format; ``max_header_bytes``
    bounds each header line (and the request line)."""

    def __init__(self, app: web.Application, *, max_header_bytes: int = 8190, **kwargs: Any) -> None:
        super().__init__(app, max_line_size=max_header_bytes, max_field_size=max_header_bytes, **kwargs)
        self._max_header_bytes = max_header_bytes

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _Server  # same state, our handler class; aiohttp builds Server itself
        # The app has started: its middlewares are final.
        cast(_Server, server).front_end = front_end_rules(self._app, self._max_header_bytes)
        return server
