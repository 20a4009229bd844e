"""Rules of the MCP gateway: host and origin patterns, team access, tool calls and their outcomes read
from JSON-RPC bodies and from server-sent events cut at any byte."""

from __future__ import annotations

import orjson
import pytest

from aqueduct_libs.snapshot import McpServerRoute, TokenGrant
from aqueduct_proxy.domain.errors import ForbiddenError
from aqueduct_proxy.mcp.domain import (
    McpServerNotFoundError,
    SseScanner,
    check_access,
    check_rebinding,
    matches,
    outcome_status,
    parse_patterns,
    refusal,
    tool_calls,
)

HOSTS = parse_patterns("127.0.0.1:*, localhost:*, gateway.example.org")
ORIGINS = parse_patterns("https://ui.example.org,http://localhost:*")


def test_host_and_origin_patterns():
    assert matches("127.0.0.1:8000", HOSTS) and matches("gateway.example.org", HOSTS)
    assert not matches("127.0.0.1.evil.example:80", HOSTS)  # a prefix is not a port
    assert not matches("127.0.0.1:", HOSTS) and not matches("evil.example", HOSTS)
    assert matches("anything", ("*",))
    check_rebinding("localhost:9000", None, HOSTS, ORIGINS)  # no Origin: not a browser's cross-site call
    check_rebinding("localhost:9000", "http://localhost:3000", HOSTS, ORIGINS)
    for host, origin in (("evil.example", None), ("localhost:9000", "https://evil.example"), (None, None)):
        with pytest.raises(ForbiddenError):
            check_rebinding(host, origin, HOSTS, ORIGINS)


def test_only_allowed_teams_reach_a_server():
    route = McpServerRoute(name="tools", url="http://t/mcp", allowed_team_ids=["t1"])
    grant = TokenGrant(token_id="k", token_hash="h", name="n", user_id="u", org_id="o", team_id="t1")
    assert check_access(grant, route, "tools") is route
    with pytest.raises(ForbiddenError):
        check_access(grant.model_copy(update={"team_id": "t2"}), route, "tools")
    with pytest.raises(ForbiddenError):
        check_access(grant.model_copy(update={"team_id": None}), route, "tools")
    with pytest.raises(McpServerNotFoundError):
        check_access(grant, None, "nope")


def test_tool_calls_are_read_from_single_and_batched_requests():
    single = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "add", "arguments": {}}}
    batch = [
        single,
        {"jsonrpc": "2.0", "id": "x", "method": "tools/list"},
        {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "notification-without-id"}},
    ]
    assert [(c.request_id, c.tool) for c in tool_calls(orjson.dumps(single))] == [(7, "add")]
    assert [(c.request_id, c.tool) for c in tool_calls(orjson.dumps(batch))] == [(7, "add")]
    assert tool_calls(b"not json") == []


def test_outcomes():
    assert outcome_status({"id": 1, "result": {"content": []}}) == 200
    assert outcome_status({"id": 1, "result": {"isError": True}}) == 422
    assert outcome_status({"id": 1, "error": {"code": -32602, "message": "bad params"}}) == 400
    assert outcome_status({"id": 1, "error": {"code": -32000, "message": "crashed"}}) == 500


def test_sse_answers_are_found_whatever_the_chunking():
    stream = (
        b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{}}\r\n\r\n'
        b'event: message\ndata: {"jsonrpc":"2.0","id":3,"result":{"isError":false}}\n\n'
    )
    for size in (1, 2, 7, len(stream)):
        scanner, found = SseScanner(), []
        for start in range(0, len(stream), size):
            found += scanner.feed(stream[start : start + size])
        assert found == [{"jsonrpc": "2.0", "id": 3, "result": {"isError": False}}]


def test_a_refused_post_answers_each_request_in_it_and_no_notification():
    single = {"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "add"}}
    answer = orjson.loads(refusal(orjson.dumps(single), 429, "Rate limit reached", {"retry_after": 9}))
    assert answer == {
        "jsonrpc": "2.0",
        "id": "a",
        "error": {"code": -32005, "message": "Rate limit reached", "data": {"retry_after": 9}},
    }
    batch = [single, {"jsonrpc": "2.0", "method": "notifications/progress"}, {**single, "id": 2}]
    answers = orjson.loads(refusal(orjson.dumps(batch), 503, "Limits cannot be checked", {}))
    assert [(a["id"], a["error"]["code"]) for a in answers] == [("a", -32603), (2, -32603)]
    assert orjson.loads(refusal(b"{broken", 429, "x", {})) == []
