"""``/mcp/{name}``: MCP's streamable HTTP transport, relayed to the registered server.

POST (JSON-RPC in; a JSON answer or a server-sent event stream out), GET (the server's event stream) and
DELETE (end of session) pass both ways chunk by chunk, with ``Mcp-Session-Id`` kept end to end. Every
``tools/call`` in a POST counts against the token's requests-per-minute limit (over it: 429 and a JSON-RPC
error, nothing forwarded) and becomes one usage event with the tool, the outcome and the latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from aqueduct_libs.events import UsageRecorded, utcnow
from aqueduct_libs.snapshot import TokenGrant
from aqueduct_proxy.domain.errors import (
    LimiterUnavailableError,
    ProxyError,
    RateLimitedError,
    UpstreamError,
)
from aqueduct_proxy.files.edge import Authenticate
from aqueduct_proxy.mcp.domain import (
    SseScanner,
    ToolCall,
    check_access,
    check_rebinding,
    outcome_status,
    parse_patterns,
    refusal,
    responses_in,
    tool_calls,
)
from aqueduct_proxy.mcp.limits import AdmitToolCalls
from aqueduct_proxy.mcp.registry import McpRegistry
from aqueduct_proxy.mcp.settings import McpSettings

__all__ = ["setup_mcp"]

RecordUsage = Callable[[UsageRecorded], None]

_TO_SERVER = ("Accept", "Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-ID")
_TO_CLIENT = ("Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version", "Cache-Control", "Allow")
_CLIENT_CHECK_SECONDS = 5.0
_MAX_JSON_SCAN = 4 * 1024 * 1024  # JSON answers larger than this pass through without being parsed
_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("mcp_upstream", aiohttp.ClientSession)


class _ToolCallTally:
    """Tool calls of one POST waiting for their answers, recorded once each."""

    def __init__(
        self, grant: TokenGrant, server: str, route: str, calls: list[ToolCall], record: RecordUsage
    ) -> None:
        self._grant, self._server, self._route, self._record = grant, server, route, record
        self._pending = {_id_key(c.request_id): c for c in calls}
        self._started = time.perf_counter()
        self._occurred_at = utcnow()

    def answered(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            call = self._pending.pop(_id_key(message.get("id")), None)
            if call is not None:
                self._emit(call, outcome_status(message))

    def close(self, status: int, cut_short: bool = False) -> None:
        """Calls left without a JSON-RPC answer: the HTTP status, or 502 if the stream ended early."""
        for call in self._pending.values():
            self._emit(call, status, cut_short)
        self._pending.clear()

    def _emit(self, call: ToolCall, status: int, cut_short: bool = False) -> None:
        g = self._grant
        self._record(
            UsageRecorded(
                occurred_at=self._occurred_at,
                kind="mcp",
                token_id=g.token_id,
                user_id=g.user_id,
                service_account_id=g.service_account_id,
                team_id=g.team_id,
                org_id=g.org_id,
                endpoint=self._server,
                model="",
                route=self._route,
                status_code=status,
                latency_ms=round((time.perf_counter() - self._started) * 1000, 3),
                tool=call.tool,
                cut_short=cut_short,
            )
        )


async def _next_chunk(request: web.Request, upstream: aiohttp.ClientResponse) -> bytes:
    """The next bytes from the server; b"" at its end or once the client has gone. A quiet event stream
    would otherwise hold the server's connection until it next sends something."""
    while True:
        try:
            return await asyncio.wait_for(upstream.content.readany(), _CLIENT_CHECK_SECONDS)
        except TimeoutError:
            if request.transport is None or request.transport.is_closing():
                return b""


def _id_key(value: Any) -> str:
    return orjson.dumps(value).decode()


def _refused(body: bytes, exc: ProxyError) -> web.Response:
    """Tool calls over the token's limit, answered as MCP clients read an HTTP error: the status (429,
    with Retry-After and x-ratelimit-*) and a JSON-RPC error per request, so the client's call fails with
    the reason instead of a bare "server returned an error"."""
    data: dict[str, Any] = {"type": exc.type, "code": exc.code}
    if "Retry-After" in exc.headers:
        data["retry_after"] = int(exc.headers["Retry-After"])
    return web.Response(
        body=refusal(body, exc.status, exc.message, data),
        status=exc.status,
        headers=exc.headers,
        content_type="application/json",
    )


def setup_mcp(
    app: web.Application,
    authenticate: Authenticate,
    registry: McpRegistry,
    record: RecordUsage,
    settings: McpSettings,
    admit: AdmitToolCalls,
) -> None:
    """Add ``/mcp/{name}`` to ``app``; feed ``registry`` from the auth snapshot watch. ``admit`` charges
    tool calls to the token's requests-per-minute limit before they are forwarded."""
    hosts, origins = parse_patterns(settings.allowed_hosts), parse_patterns(settings.allowed_origins)

    async def open_session(app: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout_seconds, sock_read=settings.read_timeout_seconds
        )
        app[_SESSION] = aiohttp.ClientSession(
            timeout=timeout, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )

    async def close_session(app: web.Application) -> None:
        await app[_SESSION].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        # Before anything else: a page on a rebound domain must learn nothing, not even "401".
        check_rebinding(request.headers.get("Host"), request.headers.get("Origin"), hosts, origins)
        grant = authenticate(request.headers.get("Authorization"))
        name = request.match_info["name"]
        server = registry.get(name)
        route = check_access(grant, server.route if server else None, name)
        assert server is not None
        body = await request.read() if request.method == "POST" else None
        calls = tool_calls(body) if body else []
        if calls:
            try:
                await admit(grant, name, len(calls))
            except (RateLimitedError, LimiterUnavailableError) as exc:
                return _refused(body or b"", exc)
        headers = {h: request.headers[h] for h in _TO_SERVER if h in request.headers}
        if server.auth_header:
            headers["Authorization"] = server.auth_header
        try:
            upstream = await request.app[_SESSION].request(
                request.method, route.url, headers=headers, data=body, allow_redirects=False
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(
                f"The MCP server '{name}' could not be reached ({type(exc).__name__})."
            ) from exc
        tally = _ToolCallTally(grant, name, f"/mcp/{name}", calls, record)
        cut_short = True
        try:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for h in _TO_CLIENT:
                if h in upstream.headers:
                    response.headers[h] = upstream.headers[h]
            await response.prepare(request)
            is_sse = upstream.content_type == "text/event-stream"
            scanner, whole, size = SseScanner(), bytearray(), 0
            try:
                while chunk := await _next_chunk(request, upstream):
                    if is_sse:
                        tally.answered(scanner.feed(chunk))
                    elif size <= _MAX_JSON_SCAN:
                        whole += chunk
                    size += len(chunk)
                    await response.write(chunk)
                if not is_sse and whole and size <= _MAX_JSON_SCAN:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        tally.answered(responses_in(orjson.loads(bytes(whole))))
                await response.write_eof()
                cut_short = False
            except (ConnectionResetError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                pass  # one side went away mid-stream; the status line is out, so the stream just ends
            return response
        finally:
            tally.close(upstream.status if upstream.status >= 400 else 502, cut_short=cut_short)
            upstream.release()

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/mcp/{name}", relay)
