"""An "anthropic" endpoint, served through LiteLLM's translation, against an Anthropic-format server.

The upstream is tests/support/anthropic_upstream.py (Anthropic's Messages API, its SSE events and error
bodies, as its own process); clients use the official ``openai`` SDK against the running proxy.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest

from aqueduct_cli.embedded import free_port, wait_for_port
from aqueduct_proxy.adapters.litellm_bridge import LiteLLMBridge
from conftest import ROOT, usage_events, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey, pytest.mark.slow]

KEY = "sk-ant-test-" + uuid.uuid4().hex
KEY_ENV = "AQUEDUCT_TEST_ANTHROPIC_KEY_" + uuid.uuid4().hex[:8].upper()
WRONG_KEY_ENV = KEY_ENV + "_WRONG"
SYSTEM = "be brief"  # 2 words
QUESTION = "one two three"  # 3 words


class Anthropic:
    def __init__(self, port: int, process: subprocess.Popen) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.process = process

    async def requests(self) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.get(self.base + "/_requests") as r:
            return list(await r.json())

    async def clear(self) -> None:
        async with aiohttp.ClientSession() as session, session.delete(self.base + "/_requests"):
            pass

    async def fail(self, **rule: int) -> None:
        async with aiohttp.ClientSession() as session, session.post(self.base + "/_fail", json=rule) as r:
            assert r.status == 200


@pytest.fixture(scope="module")
def anthropic() -> Iterator[Anthropic]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.anthropic_upstream", "--port", str(port), "--api-key", KEY],
        cwd=ROOT,
    )
    wait_for_port("127.0.0.1", port, process=process)
    # The proxy reads api_key_env when the endpoint's route arrives, from its own environment.
    os.environ[KEY_ENV] = KEY
    os.environ[WRONG_KEY_ENV] = "sk-ant-not-the-key"
    yield Anthropic(port, process)
    os.environ.pop(KEY_ENV, None)
    os.environ.pop(WRONG_KEY_ENV, None)
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
async def routes(snapshot, anthropic: Anthropic) -> None:
    # Written with /v1, as an admin copying a base URL might: the bridge must not call /v1/v1/messages.
    await snapshot.put_endpoint("claude", anthropic.base + "/v1", provider="anthropic", api_key_env=KEY_ENV)
    await snapshot.put_model("claude-test", "claude", "claude-upstream-id")
    await snapshot.put_endpoint(
        "claude-wrong-key", anthropic.base, provider="anthropic", api_key_env=WRONG_KEY_ENV
    )
    await snapshot.put_model("claude-wrong-key", "claude-wrong-key", "claude-upstream-id")
    await snapshot.put_endpoint("claude-down", f"http://127.0.0.1:{free_port()}", provider="anthropic")
    await snapshot.put_model("claude-down", "claude-down", "claude-upstream-id")


async def client_for(proxy, snapshot) -> tuple[openai.AsyncOpenAI, Any]:
    value, grant = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    return openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0, timeout=60), grant


def messages(question: str = QUESTION) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


async def test_chat_plain_and_streamed_with_exact_usage(proxy, snapshot, bus, anthropic, routes):
    client, grant = await client_for(proxy, snapshot)
    await anthropic.clear()

    answer = await client.chat.completions.create(model="claude-test", messages=messages(), max_tokens=4)
    assert answer.choices[0].message.content == "tok0 tok1 tok2 tok3"
    assert answer.choices[0].finish_reason == "length"  # Anthropic's stop_reason "max_tokens"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 4)

    stream = await client.chat.completions.create(
        model="claude-test",
        messages=messages(),
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2"
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 3)

    # Without include_usage the usage chunk the gateway asked for is not passed on.
    stream = await client.chat.completions.create(
        model="claude-test", messages=messages("one two"), max_tokens=6, stream=True
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == " ".join(
        f"tok{i}" for i in range(6)
    )
    assert all(c.usage is None for c in chunks)

    events = await usage_events(bus, grant.token_id, 3)
    assert sorted((e.input_tokens, e.output_tokens, e.streamed) for e in events) == [
        (4, 6, True),
        (5, 3, True),
        (5, 4, False),
    ]
    assert all(e.endpoint == "claude" and e.model == "claude-test" for e in events)
    assert all(e.status_code == 200 and not e.cut_short for e in events)

    seen = await anthropic.requests()
    assert len(seen) == 3
    for request in seen:
        assert request["path"] == "/v1/messages"
        assert request["headers"]["x-api-key"] == KEY
        assert request["headers"]["anthropic-version"]
        assert "authorization" not in request["headers"]
        assert request["body"]["model"] == "claude-upstream-id"
        assert request["body"]["system"][0]["text"] == SYSTEM  # the system message moved out
        assert [m["role"] for m in request["body"]["messages"]] == ["user"]
    assert [r["body"].get("stream", False) for r in seen] == [False, True, True]
    assert [r["body"]["max_tokens"] for r in seen] == [4, 3, 6]


async def test_provider_errors_map_to_openai_errors(proxy, snapshot, bus, anthropic, routes):
    client, grant = await client_for(proxy, snapshot)
    retries = proxy.proxy.gateway.config.retries

    await anthropic.clear()
    await anthropic.fail(status=429, times=100)
    try:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="claude-test", messages=messages(), max_tokens=2)
        with pytest.raises(openai.RateLimitError):  # a stream refused before its first byte
            await client.chat.completions.create(
                model="claude-test", messages=messages(), max_tokens=2, stream=True
            )
        # The gateway retries 429 itself (LiteLLM does not retry on top of it).
        assert len(await anthropic.requests()) == 2 * (retries + 1)

        await anthropic.fail(status=500, times=100)
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="claude-test", messages=messages(), max_tokens=2)

        await anthropic.fail(status=400, times=100)
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="claude-test", messages=messages(), max_tokens=2)
        assert "injected failure" in bad.value.message
    finally:
        await anthropic.fail(status=500, times=0)

    # The provider refusing the gateway's own key is not the client's key being wrong: 502, said clearly.
    with pytest.raises(openai.APIStatusError) as refused:
        await client.chat.completions.create(model="claude-wrong-key", messages=messages(), max_tokens=2)
    assert refused.value.status_code == 502
    assert "credentials" in refused.value.message and "API key" in refused.value.message
    assert (await anthropic.requests())[-1]["headers"]["x-api-key"] == "sk-ant-not-the-key"

    # Nothing listening: retried, then 502 like an unreachable OpenAI endpoint.
    with pytest.raises(openai.APIStatusError) as down:
        await client.chat.completions.create(model="claude-down", messages=messages(), max_tokens=2)
    assert down.value.status_code == 502
    assert "could not be reached" in down.value.message

    # And the endpoint still answers once the provider is well again.
    answer = await client.chat.completions.create(model="claude-test", messages=messages(), max_tokens=1)
    assert answer.choices[0].message.content == "tok0"
    statuses = sorted(e.status_code for e in await usage_events(bus, grant.token_id, 6))
    assert {429, 500, 400, 502, 200} <= set(statuses)


async def test_stream_broken_off_by_the_provider(proxy, snapshot, bus, anthropic, routes):
    client, grant = await client_for(proxy, snapshot)
    await anthropic.fail(stream_error_after=2, times=1)  # an "overloaded_error" event after 2 words

    stream = await client.chat.completions.create(
        model="claude-test", messages=messages(), max_tokens=5, stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as broken:
        async for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "broke off" in str(broken.value)
    assert "".join(received) == "tok0 tok1"

    [event] = await usage_events(bus, grant.token_id, 1)
    assert event.cut_short and event.streamed
    assert (event.input_tokens, event.output_tokens) == (5, 2)  # the proxy's count, chunks seen


async def test_slow_provider_is_a_timeout_for_the_gateway(anthropic):
    # The proxy's upstream timeout is 600 s in the shared fixture, so the bridge is driven directly: a
    # provider slower than the deadline must surface as TimeoutError, which the gateway retries, counts
    # towards the endpoint's cooldown and answers as 502 "did not answer in time" (as for OpenAI).
    await anthropic.fail(delay=3.0, times=1)
    payload = {"model": "claude-upstream-id", "messages": messages(), "max_tokens": 2}
    with pytest.raises(TimeoutError):
        await LiteLLMBridge().chat("anthropic", anthropic.base, KEY, payload, 0.5)
    answer = await LiteLLMBridge().chat("anthropic", anthropic.base, KEY, payload, 10)
    assert answer.status == 200 and b'"tok0 tok1"' in await answer.read()


async def test_client_gone_mid_stream_closes_the_provider_stream(proxy, snapshot, bus, anthropic, routes):
    client, grant = await client_for(proxy, snapshot)
    await anthropic.clear()
    await anthropic.fail(word_delay=0.1, times=1)

    stream = await client.chat.completions.create(
        model="claude-test", messages=messages(), max_tokens=40, stream=True
    )
    words = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            words += 1
            if words == 3:
                break
    await stream.close()

    [event] = await usage_events(bus, grant.token_id, 1)
    assert event.cut_short and event.streamed
    assert event.input_tokens == 5 and 3 <= event.output_tokens < 40
    # The gateway let go of the provider's stream too: it stopped producing (and billing) words.
    deadline = asyncio.get_running_loop().time() + 5
    while not (seen := await anthropic.requests())[-1].get("aborted"):
        assert asyncio.get_running_loop().time() < deadline, seen[-1].get("words_sent")
        await asyncio.sleep(0.1)
    assert seen[-1]["words_sent"] < 40
