"""``/v1/messages`` driven by the official ``anthropic`` SDK: translated for an OpenAI-compatible endpoint
(tests/support/upstream.py) and passed through to an Anthropic endpoint (tests/support/anthropic_upstream.py),
plain, streamed, with tools and ``count_tokens``, under the same governance as chat completions.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anthropic
import pytest

from aqueduct_cli.embedded import free_port, wait_for_port
from aqueduct_libs import names
from aqueduct_libs.snapshot import Limits, QuotaDecision
from aqueduct_proxy.adapters.tokenizer import TokenCounter
from conftest import ROOT, usage_events, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey, pytest.mark.slow]

KEY = "sk-ant-test-" + uuid.uuid4().hex
KEY_ENV = "AQUEDUCT_TEST_MESSAGES_KEY_" + uuid.uuid4().hex[:8].upper()
SYSTEM = "be brief"  # 2 words
QUESTION = "one two three"  # 3 words
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


class Upstream:
    def __init__(self, base: str) -> None:
        self.base = base

    async def requests(self) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.get(self.base + "/_requests") as r:
            return list(await r.json())

    async def clear(self) -> None:
        async with aiohttp.ClientSession() as session, session.delete(self.base + "/_requests"):
            pass

    async def fail(self, **rule: Any) -> None:
        async with aiohttp.ClientSession() as session, session.post(self.base + "/_fail", json=rule) as r:
            assert r.status == 200


@pytest.fixture(scope="module")
def claude() -> Iterator[Upstream]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.anthropic_upstream", "--port", str(port), "--api-key", KEY],
        cwd=ROOT,
    )
    wait_for_port("127.0.0.1", port, process=process)
    os.environ[KEY_ENV] = KEY
    yield Upstream(f"http://127.0.0.1:{port}")
    os.environ.pop(KEY_ENV, None)
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def chat(upstream) -> Upstream:
    return Upstream(upstream.base)


@pytest.fixture(scope="module")
async def routes(snapshot, claude: Upstream) -> None:
    await snapshot.put_endpoint(
        "anthropic-native", claude.base + "/v1", provider="anthropic", api_key_env=KEY_ENV
    )
    await snapshot.put_model("claude-native", "anthropic-native", "claude-upstream-id")


async def client_for(
    proxy, snapshot, bearer: bool = False, **grant: Any
) -> tuple[anthropic.AsyncAnthropic, Any]:
    value, issued = await snapshot.issue_token(**grant)
    await wait_token(proxy.base_url, value)
    credentials = {"auth_token": value} if bearer else {"api_key": value}
    return anthropic.AsyncAnthropic(base_url=proxy.base_url, max_retries=0, timeout=60, **credentials), issued


def _words(n: int) -> str:
    return " ".join(f"tok{i}" for i in range(n))


async def test_translated_plain_and_streamed_with_exact_usage(proxy, snapshot, bus, chat):
    client, grant = await client_for(proxy, snapshot)
    await chat.clear()

    message = await client.messages.create(
        model="gpt-test",
        system=SYSTEM,
        max_tokens=4,
        messages=[{"role": "user", "content": QUESTION}],
        stop_sequences=["END"],
        extra_body={"temperature": 0.5},
    )
    assert message.type == "message" and message.role == "assistant" and message.model == "gpt-test"
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == _words(4)
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 4)

    async with client.messages.stream(
        model="gpt-test",
        system=[{"type": "text", "text": SYSTEM}],
        max_tokens=3,
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
    assert final.content[0].text == _words(3) and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 3)

    seen = await chat.requests()
    assert [r["path"] for r in seen] == ["/v1/chat/completions"] * 2
    first, second = seen[0]["body"], seen[1]["body"]
    assert first["model"] == "fake-upstream-model"
    assert first["messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    assert (first["max_tokens"], first["stop"], first["temperature"]) == (4, ["END"], 0.5)
    assert second["stream"] is True and second["stream_options"] == {"include_usage": True}
    assert second["messages"][1] == {"role": "user", "content": QUESTION}
    assert all("authorization" not in r["headers"] or KEY not in r["headers"]["authorization"] for r in seen)

    events = await usage_events(bus, grant.token_id, 2)
    assert sorted((e.route, e.model, e.input_tokens, e.output_tokens, e.streamed) for e in events) == [
        ("/v1/messages", "gpt-test", 5, 3, True),
        ("/v1/messages", "gpt-test", 5, 4, False),
    ]
    assert all(e.endpoint == "local" and e.status_code == 200 and not e.cut_short for e in events)


async def test_translated_tool_use_tool_results_and_images(proxy, snapshot, bus, chat):
    client, grant = await client_for(proxy, snapshot, bearer=True)  # Claude Code's ANTHROPIC_AUTH_TOKEN
    await chat.clear()
    question = {"role": "user", "content": "weather in Paris"}

    called = await client.messages.create(
        model="gpt-test",
        max_tokens=50,
        messages=[question],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert called.stop_reason == "tool_use"
    (use,) = called.content
    assert (use.type, use.name, use.input) == ("tool_use", "get_weather", {"city": "tok0"})
    assert called.usage.output_tokens == 2

    async with client.messages.stream(
        model="gpt-test", max_tokens=50, messages=[question], tools=[WEATHER], tool_choice={"type": "any"}
    ) as stream:
        streamed = await stream.get_final_message()
    assert streamed.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in streamed.content] == [
        ("tool_use", "get_weather", {"city": "tok0"})
    ]

    image = base64.b64encode(b"\x89PNG fake").decode()
    answer = await client.messages.create(
        model="gpt-test",
        max_tokens=2,
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": [{"type": "text", "text": "let me look"}, use.model_dump()]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "sunny and warm"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
                    {"type": "text", "text": "and this picture?"},
                ],
            },
        ],
    )
    assert answer.content[0].text == _words(2) and answer.stop_reason == "end_turn"

    seen = [r["body"] for r in await chat.requests()]
    assert seen[0]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assert seen[0]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert seen[1]["tool_choice"] == "required"
    assert "tool_choice" not in seen[2]
    assert seen[2]["messages"] == [
        {"role": "user", "content": "weather in Paris"},
        {
            "role": "assistant",
            "content": "let me look",
            "tool_calls": [
                {
                    "id": use.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"tok0"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": use.id, "content": "sunny and warm"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                {"type": "text", "text": "and this picture?"},
            ],
        },
    ]
    events = await usage_events(bus, grant.token_id, 3)
    assert sorted(e.output_tokens for e in events) == [2, 2, 2]


async def test_count_tokens_translated_and_native(proxy, snapshot, bus, claude, routes):
    client, grant = await client_for(proxy, snapshot)
    counter = TokenCounter()
    counted = await client.messages.count_tokens(
        model="gpt-test", system=SYSTEM, messages=[{"role": "user", "content": QUESTION}], tools=[WEATHER]
    )
    expected = counter.count_text(SYSTEM) + counter.count_text(QUESTION)
    assert counted.input_tokens > expected  # the tool definition counts too
    await claude.clear()
    native = await client.messages.count_tokens(
        model="claude-native", system=SYSTEM, messages=[{"role": "user", "content": QUESTION}]
    )
    assert native.input_tokens == 5  # the Anthropic upstream's own count (words)
    (request,) = await claude.requests()
    assert request["path"] == "/v1/messages/count_tokens" and request["body"]["model"] == "claude-upstream-id"
    events = await usage_events(bus, grant.token_id, 2)
    assert sorted((e.route, e.input_tokens, e.output_tokens) for e in events) == [
        ("/v1/messages/count_tokens", 0, 0),
        ("/v1/messages/count_tokens", 0, 0),
    ]


async def test_native_pass_through_plain_streamed_tools_and_cache_usage(proxy, snapshot, bus, claude, routes):
    client, grant = await client_for(proxy, snapshot)
    await claude.clear()

    message = await client.messages.create(
        model="claude-native",
        system=SYSTEM,
        max_tokens=4,
        messages=[{"role": "user", "content": QUESTION}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31", "x-fake-cache-read": "2"},
    )
    assert message.content[0].text == _words(4) and message.stop_reason == "max_tokens"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (3, 2)

    async with client.messages.stream(
        model="claude-native",
        max_tokens=3,
        messages=[{"role": "user", "content": QUESTION}],
        extra_headers={"x-fake-cache-write-5m": "1"},
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == _words(3) and final.usage.output_tokens == 3

    called = await client.messages.create(
        model="claude-native",
        max_tokens=50,
        messages=[{"role": "user", "content": "weather in Paris"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert [(b.type, b.input) for b in called.content] == [("tool_use", {"city": "tok0"})]

    seen = await claude.requests()
    assert [r["path"] for r in seen] == ["/v1/messages"] * 3
    for request in seen:
        assert request["headers"]["x-api-key"] == KEY  # the endpoint's key, never the client's token
        assert "authorization" not in request["headers"]
        assert request["headers"]["anthropic-version"] == client.default_headers["anthropic-version"]
        assert request["body"]["model"] == "claude-upstream-id"
    assert seen[0]["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert seen[0]["body"]["system"] == SYSTEM  # unchanged: not translated
    assert seen[2]["body"]["tools"] == [WEATHER]

    events = await usage_events(bus, grant.token_id, 3)
    by_output = {e.output_tokens: e for e in events}
    # Anthropic's input_tokens exclude cached tokens; the gateway's include them (as OpenAI counts).
    assert (by_output[4].input_tokens, by_output[4].cached_tokens, by_output[4].streamed) == (5, 2, False)
    assert (by_output[3].input_tokens, by_output[3].streamed) == (3, True)
    assert by_output[2].input_tokens == 3  # "weather in Paris"
    assert all(e.endpoint == "anthropic-native" and e.route == "/v1/messages" for e in events)


async def test_endpoint_route_form(proxy, snapshot, bus, claude, routes):
    value, grant = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    local = anthropic.AsyncAnthropic(base_url=proxy.base_url + "/local", api_key=value, max_retries=0)
    # On an endpoint's own route the upstream's model id is accepted too.
    answer = await local.messages.create(
        model="fake-upstream-model", max_tokens=2, messages=[{"role": "user", "content": QUESTION}]
    )
    assert answer.content[0].text == _words(2)
    native = anthropic.AsyncAnthropic(
        base_url=proxy.base_url + "/anthropic-native", api_key=value, max_retries=0
    )
    answer = await native.messages.create(
        model="claude-native", max_tokens=2, messages=[{"role": "user", "content": QUESTION}]
    )
    assert answer.content[0].text == _words(2)
    with pytest.raises(anthropic.NotFoundError):
        await native.messages.create(
            model="gpt-test", max_tokens=2, messages=[{"role": "user", "content": "x"}]
        )
    events = await usage_events(bus, grant.token_id, 2)
    assert sorted(e.route for e in events) == ["/anthropic-native/v1/messages", "/local/v1/messages"]


async def test_the_anthropic_sdk_lists_the_models_of_its_token(proxy, snapshot):
    client, _ = await client_for(proxy, snapshot, allowed_models=["gpt-test"])
    page = await client.models.list()
    assert [(m.id, m.type) for m in page.data] == [("gpt-test", "model")]


def _anthropic_error(exc: anthropic.APIStatusError) -> tuple[int, str]:
    body = exc.response.json()
    assert body["type"] == "error" and isinstance(body["error"]["message"], str)
    return exc.status_code, body["error"]["type"]


async def test_governance_and_errors_in_anthropics_format(proxy, snapshot, bus, chat):
    say = [{"role": "user", "content": QUESTION}]
    stranger = anthropic.AsyncAnthropic(base_url=proxy.base_url, api_key="aq-not-a-token", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        await stranger.messages.create(model="gpt-test", max_tokens=2, messages=say)
    assert _anthropic_error(refused.value) == (401, "authentication_error")
    with pytest.raises(anthropic.AuthenticationError):
        await stranger.messages.count_tokens(model="gpt-test", messages=say)

    client, _ = await client_for(proxy, snapshot, allowed_models=["other-model"])
    with pytest.raises(anthropic.PermissionDeniedError) as forbidden:
        await client.messages.create(model="gpt-test", max_tokens=2, messages=say)
    assert _anthropic_error(forbidden.value) == (403, "permission_error")
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="no-such-model", max_tokens=2, messages=say)
    assert _anthropic_error(missing.value) == (404, "not_found_error")
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.messages.create(model="other-model", max_tokens=2, messages=[])
    assert _anthropic_error(bad.value) == (400, "invalid_request_error")

    terms, _ = await client_for(proxy, snapshot, tos_accepted=False)
    with pytest.raises(anthropic.PermissionDeniedError) as unaccepted:
        await terms.messages.create(model="gpt-test", max_tokens=2, messages=say)
    assert "terms of service" in unaccepted.value.message

    limited, grant = await client_for(proxy, snapshot, limits=Limits(requests_per_minute=1))
    await limited.messages.create(model="gpt-test", max_tokens=2, messages=say)
    with pytest.raises(anthropic.RateLimitError) as limit:
        await limited.messages.create(model="gpt-test", max_tokens=2, messages=say)
    assert _anthropic_error(limit.value) == (429, "rate_limit_error")
    assert limit.value.response.headers["retry-after"]

    broke, broke_grant = await client_for(proxy, snapshot)
    quota = await bus.key_value(names.QUOTA_BUCKET)
    now = datetime.now(UTC)
    decision = QuotaDecision(
        scope="user",
        scope_id=broke_grant.user_id,
        budget="user daily budget of $1.00",
        period="day",
        until=now + timedelta(hours=1),
        decided_at=now,
    )
    await quota.put(f"user.{broke_grant.user_id}", decision.model_dump_json().encode())
    for _ in range(200):
        if proxy.proxy.gateway.snapshot.quota_in_force(broke_grant) is not None:
            break
        await asyncio.sleep(0.05)
    with pytest.raises(anthropic.RateLimitError) as budget:
        await broke.messages.create(model="gpt-test", max_tokens=2, messages=say)
    assert "budget" in budget.value.message
    # What costs nothing is still served with a used-up budget: counting a prompt, listing the models.
    counted = await broke.messages.count_tokens(model="gpt-test", messages=say)
    assert counted.input_tokens > 0
    assert "gpt-test" in [m.id async for m in broke.models.list()]

    # An upstream's error answer comes back in Anthropic's format with its status.
    await chat.fail(status=400, times=1)
    with pytest.raises(anthropic.BadRequestError) as upstream_bad:
        await client.messages.create(model="other-model", max_tokens=2, messages=say)
    assert _anthropic_error(upstream_bad.value) == (400, "invalid_request_error")
    assert upstream_bad.value.response.json()["error"]["message"] == "injected failure"
    events = await usage_events(bus, grant.token_id, 1)
    assert [(e.route, e.status_code) for e in events] == [("/v1/messages", 200)]


async def test_a_stream_cut_short_is_recorded_and_reported(proxy, snapshot, bus, chat):
    client, grant = await client_for(proxy, snapshot)
    with pytest.raises(anthropic.APIError):
        async with client.messages.stream(
            model="gpt-test",
            max_tokens=6,
            messages=[{"role": "user", "content": QUESTION}],
            extra_headers={"x-fake-break-after": "2"},
        ) as stream:
            async for _ in stream:
                pass
    (event,) = await usage_events(bus, grant.token_id, 1)
    assert event.cut_short and event.streamed and event.route == "/v1/messages"
    assert event.input_tokens > 0 and event.output_tokens == 2  # estimated from the chunks relayed


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/messages", 400),  # a wrong method, refused before any route runs
        ("POST", "/v1/messages/", 404),  # a trailing slash
        ("POST", "/v1/messages/batches", 404),  # an Anthropic API the gateway does not serve
        ("GET", "/v1/messages/count_tokens", 400),
        ("POST", "/local/v1/messages/batches", 404),
    ],
)
async def test_refusals_under_the_messages_api_are_in_anthropics_format(
    proxy, snapshot, method, path, status
):
    value, _ = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    headers = {"Authorization": f"Bearer {value}", "anthropic-version": "2023-06-01"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, proxy.base_url + path, headers=headers, json={} if method == "POST" else None
        ) as answer,
    ):
        assert answer.status == status
        body = await answer.json()
    assert body["type"] == "error" and body["error"]["type"] in ("invalid_request_error", "not_found_error")
    assert isinstance(body["error"]["message"], str)


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/local/v1/messages"), ("POST", "/local/v1/messages/batches")]
)
async def test_anthropic_clients_key_alone_is_read_on_an_endpoints_messages_paths(
    proxy, snapshot, method, path
):
    """Anthropic's SDKs send only ``x-api-key``: under ``/{slug}/v1/messages`` a path the gateway does not
    serve is refused as such (404, Anthropic's format), not as a missing key."""
    value, _ = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    headers = {"x-api-key": value, "anthropic-version": "2023-06-01"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, proxy.base_url + path, headers=headers) as answer,
    ):
        assert answer.status == 404, await answer.text()
        body = await answer.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, proxy.base_url + path, headers={"x-api-key": "aq-wrong"}) as refused,
    ):
        assert refused.status == 401  # a wrong key is still refused
