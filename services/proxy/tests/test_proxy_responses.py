"""``/v1/responses`` for an endpoint marked ``responses: false`` (a server with chat completions only),
driven by the official ``openai`` SDK: translated to chat completions and back, plain, streamed and with
function calls; and model aliases, which clients such as coding agents send as fixed names."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from conftest import usage_events, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey, pytest.mark.slow]

SHELL = {
    "type": "function",
    "name": "shell",
    "description": "Run a command",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
}


@pytest.fixture(scope="module")
async def chat_only(snapshot, upstream) -> Any:
    await snapshot.put_endpoint("chat-only", upstream.url, responses=False)
    await snapshot.put_model(
        "local-model", "chat-only", "local-upstream", aliases=["gpt-5-codex", "claude-sonnet-4-5"]
    )
    return upstream


async def _requests(upstream: Any) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(upstream.base + "/_requests") as r:
        return list(await r.json())


async def _clear(upstream: Any) -> None:
    async with aiohttp.ClientSession() as session, session.delete(upstream.base + "/_requests"):
        pass


async def client_for(proxy, snapshot, **grant: Any) -> tuple[openai.AsyncOpenAI, Any, str]:
    value, issued = await snapshot.issue_token(**grant)
    await wait_token(proxy.base_url, value)
    return openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0, timeout=60), issued, value


async def test_responses_translated_plain_streamed_and_with_function_calls(proxy, snapshot, bus, chat_only):
    client, grant, _ = await client_for(proxy, snapshot)
    await _clear(chat_only)

    answer = await client.responses.create(
        model="local-model", instructions="be brief", input="one two three", max_output_tokens=4
    )
    assert answer.status == "completed" and answer.output_text == "tok0 tok1 tok2 tok3"
    assert answer.usage is not None and (answer.usage.input_tokens, answer.usage.output_tokens) == (5, 4)

    stream = await client.responses.create(
        model="local-model",
        input=[{"role": "developer", "content": "be brief"}, {"role": "user", "content": "one two three"}],
        max_output_tokens=3,
        stream=True,
    )
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "tok0 tok1 tok2"
    done = events[-1].response
    assert done.output_text == "tok0 tok1 tok2"
    assert done.usage is not None and (done.usage.input_tokens, done.usage.output_tokens) == (5, 3)
    assert [e.sequence_number for e in events] == list(range(len(events)))

    called = await client.responses.create(
        model="local-model", input="list the files", tools=[SHELL], tool_choice="required"
    )
    (call,) = called.output
    assert (call.type, call.name, call.arguments) == ("function_call", "shell", '{"command": "tok0"}')

    stream = await client.responses.create(
        model="local-model", input="list the files", tools=[SHELL], tool_choice="required", stream=True
    )
    events = [event async for event in stream]
    (streamed_call,) = events[-1].response.output
    assert (streamed_call.name, streamed_call.arguments) == ("shell", '{"command": "tok0"}')
    assert any(e.type == "response.function_call_arguments.delta" for e in events)

    followed = await client.responses.create(
        model="local-model",
        max_output_tokens=2,
        tools=[SHELL],
        input=[
            {"role": "user", "content": "list the files"},
            {"type": "function_call", "call_id": call.call_id, "name": "shell", "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "a.txt b.txt"},
        ],
    )
    assert followed.output_text == "tok0 tok1"

    seen = [r for r in await _requests(chat_only) if r["path"] == "/v1/chat/completions"]
    assert len(seen) == 5
    first = seen[0]["body"]
    assert first["model"] == "local-upstream"
    assert first["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one two three"},
    ]
    assert first["max_tokens"] == 4
    assert seen[1]["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    assert seen[2]["body"]["tools"] == [
        {
            "type": "function",
            "function": {"name": "shell", "description": "Run a command", "parameters": SHELL["parameters"]},
        }
    ]
    assert seen[4]["body"]["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": "shell", "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": "a.txt b.txt"},
    ]

    events_seen = await usage_events(bus, grant.token_id, 5)
    assert sorted((e.input_tokens, e.output_tokens, e.streamed) for e in events_seen) == [
        (3, 2, False),
        (3, 2, True),
        (5, 2, False),  # list the files + a.txt b.txt
        (5, 3, True),
        (5, 4, False),
    ]
    assert all(e.route == "/v1/responses" and e.endpoint == "chat-only" for e in events_seen)


async def test_state_a_chat_server_cannot_keep_is_refused(proxy, snapshot, chat_only):
    client, _, _ = await client_for(proxy, snapshot)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model="local-model", input="hi", previous_response_id="resp_123")
    assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]


async def test_endpoints_with_the_responses_api_get_it_unchanged(proxy, snapshot, upstream):
    client, _, _ = await client_for(proxy, snapshot)
    await _clear(upstream)
    answer = await client.responses.create(model="gpt-test", input="one two", max_output_tokens=2)
    assert answer.output_text == "tok0 tok1"
    (request,) = await _requests(upstream)
    assert request["path"] == "/v1/responses" and request["body"]["input"] == "one two"


async def test_an_alias_is_its_model_for_access_limits_and_usage(proxy, snapshot, bus, chat_only):
    client, grant, _ = await client_for(proxy, snapshot)
    answer = await client.chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "one two"}], max_tokens=2
    )
    assert answer.choices[0].message.content == "tok0 tok1"
    (event,) = await usage_events(bus, grant.token_id, 1)
    assert (event.model, event.alias, event.endpoint) == ("local-model", "claude-sonnet-4-5", "chat-only")

    excluded, _, _ = await client_for(proxy, snapshot, allowed_models=["gpt-test"])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await excluded.chat.completions.create(
            model="gpt-5-codex", messages=[{"role": "user", "content": "x"}]
        )
    assert "local-model" in refused.value.message
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(
            model="no-such-alias", messages=[{"role": "user", "content": "x"}]
        )
