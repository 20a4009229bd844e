"""The MCP gateway with the official ``mcp`` client against a real MCP server (built with the ``mcp``
package, run by this file as a subprocess): tools listed and called through ``/mcp/{name}``, progress
events streamed through, sessions kept, refusals for other teams and foreign origins, usage events."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx2
import openai
import pytest
from aiohttp import web
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from aqueduct_cli.embedded import free_port, wait_for_port
from aqueduct_libs import names
from aqueduct_libs.snapshot import Limits, McpServerRoute
from aqueduct_proxy.bootstrap import bootstrap
from aqueduct_proxy.mcp import McpSettings
from aqueduct_proxy.mcp.wiring import McpFeature
from conftest import common_settings, proxy_settings, spawn_proxy, usage_events, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey]


# The MCP server under test, run as its own process: three tools, one reporting progress as it works.
TOOL_SERVER = """
import asyncio, sys
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("test-tools", log_level="WARNING")

@server.tool()
def add(a: int, b: int) -> int:
    \"\"\"Add two numbers.\"\"\"
    return a + b

@server.tool()
async def count(n: int, ctx: Context) -> str:
    \"\"\"Count to n, reporting progress on the way.\"\"\"
    for i in range(n):
        await ctx.report_progress(i + 1, n)
        await asyncio.sleep(0.05)
    return f"counted to {n}"

@server.tool()
def explode() -> str:
    \"\"\"Always fails.\"\"\"
    raise ToolError("boom")

server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]), json_response=sys.argv[2] == "json")
"""


@pytest.fixture(scope="module")
def tool_servers() -> Iterator[dict[str, str]]:
    processes, urls = [], {}
    for name, mode in (("sse-tools", "sse"), ("json-tools", "json")):
        port = free_port()
        processes.append(subprocess.Popen([sys.executable, "-c", TOOL_SERVER, str(port), mode]))
        urls[name] = f"http://127.0.0.1:{port}/mcp"
    for process, url in zip(processes, urls.values(), strict=True):
        wait_for_port("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0]), timeout=30, process=process)
    yield urls
    for process in processes:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
async def registered(bus: Any, tool_servers: dict[str, str]) -> dict[str, str]:
    """The tool servers in the auth snapshot, as the directory's projection writes them."""
    kv = await bus.key_value(names.AUTH_SNAPSHOT_BUCKET)
    for name, url in tool_servers.items():
        route = McpServerRoute(name=name, url=url, allowed_team_ids=["team-1"])
        await kv.put(names.snapshot_mcp_key(name), route.model_dump_json().encode())
    return tool_servers


@pytest.fixture(scope="module")
async def gateway(
    registered: dict[str, str],
    snapshot: Any,
    nats_url: str,
    valkey_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[str]:
    """The proxy as its bootstrap builds it, with the MCP routes wired in as at start."""
    settings = proxy_settings(valkey_url)
    common = common_settings(nats_url, tmp_path_factory.mktemp("proxy-mcp"))
    proxy = await bootstrap(
        settings.model_copy(update={"common": common}), with_features=[McpFeature(McpSettings())]
    )
    await proxy.start()
    await asyncio.wait_for(proxy.watchers[0].ready.wait(), 10)
    runner = web.AppRunner(proxy.app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    yield f"http://{settings.host}:{settings.port}"
    await runner.cleanup()
    await proxy.stop()


async def issue(gateway: str, snapshot_writer: Any, **grant: Any) -> tuple[str, Any]:
    value, issued = await snapshot_writer.issue_token(**grant)
    await wait_token(gateway, value)
    return value, issued


@asynccontextmanager
async def mcp_session(url: str, token: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@pytest.mark.parametrize("server", ["sse-tools", "json-tools"])
async def test_official_client_lists_and_calls_tools_and_usage_is_recorded(gateway, snapshot, bus, server):
    value, grant = await issue(gateway, snapshot)

    async with mcp_session(f"{gateway}/mcp/{server}", value) as session:
        tools = await session.list_tools()
        added = await session.call_tool("add", {"a": 2, "b": 40})
        failed = await session.call_tool("explode", {})

    assert {t.name for t in tools.tools} == {"add", "count", "explode"}
    assert added.content[0].text == "42" and not added.is_error
    assert failed.is_error and "boom" in failed.content[0].text
    events = await usage_events(bus, grant.token_id, 2)
    assert sorted((e.tool, e.status_code) for e in events) == [("add", 200), ("explode", 422)]
    for event in events:
        assert (event.kind, event.endpoint, event.route) == ("mcp", server, f"/mcp/{server}")
        assert (event.user_id, event.team_id, event.org_id) == (grant.user_id, "team-1", "org-1")
        assert event.latency_ms > 0 and not event.cut_short


async def test_progress_events_stream_through_before_the_result(gateway, snapshot):
    value, _ = await issue(gateway, snapshot)
    seen: list[tuple[float, float]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total or 0))

    async with mcp_session(f"{gateway}/mcp/sse-tools", value) as session:
        result = await session.call_tool("count", {"n": 4}, progress_callback=on_progress)

    assert result.content[0].text == "counted to 4"
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


async def test_session_id_is_kept_and_delete_ends_the_session(gateway, snapshot):
    value, _ = await issue(gateway, snapshot)
    url = f"{gateway}/mcp/sse-tools"
    headers = {
        "Authorization": f"Bearer {value}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=init, headers=headers) as r:
            assert r.status == 200
            session_id = r.headers["Mcp-Session-Id"]
            assert "text/event-stream" in r.headers["Content-Type"]
            await r.read()
        async with http.delete(url, headers={**headers, "Mcp-Session-Id": session_id}) as r:
            assert r.status in (200, 204)
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        async with http.post(url, json=ping, headers={**headers, "Mcp-Session-Id": session_id}) as r:
            assert r.status == 404  # the server forgot the session the client ended through the gateway


async def test_refusals_other_team_foreign_origin_unknown_server_no_token(gateway, snapshot):
    outsider, _ = await issue(gateway, snapshot, team_id="team-2")
    member, _ = await issue(gateway, snapshot)
    url = f"{gateway}/mcp/sse-tools"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    accept = {"Accept": "application/json, text/event-stream"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers={**accept, "Authorization": f"Bearer {outsider}"}) as r:
            assert r.status == 403
            assert "may not use the MCP server" in (await r.json())["error"]["message"]
        evil = {**accept, "Authorization": f"Bearer {member}", "Origin": "http://evil.example"}
        async with http.post(url, json=body, headers=evil) as r:
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "origin_not_allowed"
        rebound = {**accept, "Authorization": f"Bearer {member}", "Host": "attacker.example:80"}
        async with http.post(url, json=body, headers=rebound) as r:
            assert r.status == 403
        async with http.post(
            f"{gateway}/mcp/nope", json=body, headers={**accept, "Authorization": f"Bearer {member}"}
        ) as r:
            assert r.status == 404
        async with http.post(url, json=body, headers=accept) as r:
            assert r.status == 401

    with pytest.raises(Exception):  # noqa: B017 - the official client gives up on a 403 its own way
        async with mcp_session(url, outsider) as session:
            await session.list_tools()


async def test_tool_calls_share_the_tokens_requests_per_minute_with_model_calls(gateway, snapshot, bus):
    value, grant = await issue(
        gateway, snapshot, limits=Limits(requests_per_minute=3, input_tokens_per_minute=1)
    )
    chat = openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key=value, max_retries=0)
    await chat.embeddings.create(model="gpt-test", input="x")  # one request of three, the only input token

    async with mcp_session(f"{gateway}/mcp/json-tools", value) as session:
        # A tool call spends no tokens: the used-up input-token limit does not stop it; requests do.
        assert (await session.call_tool("add", {"a": 1, "b": 2})).content[0].text == "3"
        assert (await session.call_tool("add", {"a": 2, "b": 2})).content[0].text == "4"
        with pytest.raises(MCPError) as refused:
            await session.call_tool("add", {"a": 3, "b": 3})
        assert (await session.list_tools()).tools  # the session lives on; listing is not a tool call

    assert (
        refused.value.code == -32005 and "Rate limit reached: 3 requests per minute" in refused.value.message
    )
    assert refused.value.data["code"] == "rate_limit_exceeded" and 0 < refused.value.data["retry_after"] <= 60
    # Over HTTP: 429 with Retry-After and the limit headers, one JSON-RPC error per request of a batch.
    calls = [
        {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": i}}}
        for i in (7, 8)
    ]  # fmt: skip
    headers = {"Authorization": f"Bearer {value}", "Accept": "application/json, text/event-stream"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{gateway}/mcp/json-tools", json=calls, headers=headers) as r,
    ):
        assert r.status == 429 and 0 < int(r.headers["Retry-After"]) <= 60
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        answer = await r.json()
    assert [(a["id"], a["error"]["code"]) for a in answer] == [(7, -32005), (8, -32005)]
    # Refused calls never reached the server: only the two answered ones are in the usage.
    events = await usage_events(bus, grant.token_id, 3)
    assert sorted((e.kind, e.tool or "") for e in events) == [("mcp", "add"), ("mcp", "add"), ("model", "")]


async def test_the_proxy_process_serves_mcp(
    registered, snapshot, bus, nats_url, valkey_url, tmp_path, proxy_processes
):
    process, port = spawn_proxy(nats_url, valkey_url, tmp_path)
    proxy_processes.append(process)
    base = f"http://127.0.0.1:{port}"
    value, grant = await issue(base, snapshot)

    async with mcp_session(f"{base}/mcp/json-tools", value) as session:
        added = await session.call_tool("add", {"a": 1, "b": 1})

    assert added.content[0].text == "2"
    [event] = await usage_events(bus, grant.token_id, 1)
    assert (event.kind, event.endpoint, event.tool, event.status_code) == ("mcp", "json-tools", "add", 200)
