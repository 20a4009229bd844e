"""The core path with the official OpenAI client: auth, models, chat (plain and streamed), usage events."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web

from aqueduct_cli.embedded import free_port
from aqueduct_libs.snapshot import Limits
from conftest import error_body, usage_events, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey]


async def test_chat_completion_round_trip_and_usage_event(proxy, snapshot, bus, upstream):
    value, grant = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value)

    answer = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "one two three four"}], max_tokens=7
    )

    assert answer.choices[0].message.content == " ".join(f"tok{i}" for i in range(7))
    assert answer.usage.prompt_tokens == 4 and answer.usage.completion_tokens == 7
    async with aiohttp.ClientSession() as s, s.get(f"{upstream.base}/_requests") as r:
        forwarded = (await r.json())[-1]
    assert forwarded["body"]["model"] == "fake-upstream-model"  # the upstream's id, not the public name
    assert "authorization" not in forwarded["headers"] or value not in forwarded["headers"]["authorization"]

    [event] = await usage_events(bus, grant.token_id, 1)
    assert (event.model, event.endpoint, event.route) == ("gpt-test", "local", "/v1/chat/completions")
    assert (event.input_tokens, event.output_tokens, event.status_code) == (4, 7, 200)
    assert (event.user_id, event.org_id, event.team_id) == (grant.user_id, "org-1", "team-1")
    assert not event.streamed and not event.cut_short and event.latency_ms > 0


async def test_models_lists_only_allowed_models(proxy, snapshot):
    value, _ = await snapshot.issue_token(allowed_models=["gpt-test"])
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value)
    models = await client.models.list()
    assert [m.id for m in models.data] == ["gpt-test"]

    value_all, _ = await snapshot.issue_token()
    await wait_token(proxy.base_url, value_all)
    every = await openai.AsyncOpenAI(base_url=proxy.v1, api_key=value_all).models.list()
    assert {"gpt-test", "other-model"} <= {m.id for m in every.data}


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_usage_is_exact_with_and_without_include_usage(proxy, snapshot, bus, include_usage):
    value, grant = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value)
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "a b c"}], max_tokens=6, stream=True, **extra
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " ".join(f"tok{i}" for i in range(6))
    usage_chunks = [c for c in chunks if c.usage is not None]
    # The usage chunk the proxy asked for reaches the client only if the client asked for it too.
    assert len(usage_chunks) == (1 if include_usage else 0)

    [event] = await usage_events(bus, grant.token_id, 1)
    assert (event.input_tokens, event.output_tokens) == (3, 6)
    assert event.streamed and not event.cut_short and event.ttft_ms is not None


async def test_first_chunk_arrives_before_upstream_finishes(proxy, snapshot):
    value, _ = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value)
    started = time.perf_counter()
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=10,
        stream=True,
        extra_headers={"x-fake-delay": "0.2"},
    )
    arrivals = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - started)
    assert len(arrivals) == 10
    assert arrivals[0] < 0.6  # the upstream needs 2 s for the whole answer
    assert arrivals[-1] >= 1.9


async def test_client_disconnect_midway_records_partial_usage(proxy, snapshot, bus):
    value, grant = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value)
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "one two"}],
        max_tokens=20,
        stream=True,
        extra_headers={"x-fake-delay": "0.05"},
    )
    seen = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen += 1
            if seen == 5:
                break
    await stream.close()

    [event] = await usage_events(bus, grant.token_id, 1)
    assert event.cut_short and event.streamed
    assert event.input_tokens == 2  # counted by the gateway: the stream ended without the upstream's usage
    assert 5 <= event.output_tokens < 20


async def test_upstream_breaking_midstream_is_recorded_as_cut_short(proxy, snapshot, bus):
    value, grant = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "x y z"}],
        max_tokens=10,
        stream=True,
        extra_headers={"x-fake-break-after": "4"},
    )
    with pytest.raises(Exception):  # noqa: B017 - the SDK reports the broken stream in its own way
        async for _ in stream:
            pass
    [event] = await usage_events(bus, grant.token_id, 1)
    assert event.cut_short and event.output_tokens == 4 and event.input_tokens == 3


async def test_errors_raise_the_sdk_exceptions(proxy, snapshot, bus):
    bad = openai.AsyncOpenAI(base_url=proxy.v1, api_key="aq-not-a-real-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        await bad.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert error_body(info.value)["code"] == "invalid_api_key"

    value, _ = await snapshot.issue_token(allowed_models=["gpt-test"])
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(
            model="other-model", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert error_body(info.value)["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        await client.post(
            "/chat/completions", body={"messages": [{"role": "user", "content": "hi"}]}, cast_to=object
        )

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {value}"}) as s:
        async with s.post(
            f"{proxy.v1}/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400 and (await r.json())["error"]["type"] == "invalid_request_error"
        async with s.post(
            f"{proxy.v1}/chat/completions", data=b"model=gpt-test", headers={"Content-Type": "text/plain"}
        ) as r:
            assert r.status == 400
        async with s.post(f"{proxy.v1}/chat/completions", json=[1, 2]) as r:
            assert r.status == 400


async def test_expired_deleted_and_terms_not_accepted(proxy, snapshot):
    from datetime import UTC, datetime, timedelta

    expired, _ = await snapshot.issue_token(expires_at=datetime.now(UTC) - timedelta(minutes=1))
    no_terms, _ = await snapshot.issue_token(tos_accepted=False)
    deleted, _ = await snapshot.issue_token()
    await wait_token(proxy.base_url, deleted)
    await snapshot.delete_token(deleted)
    await wait_token(proxy.base_url, no_terms)  # 403, not 401: the snapshot knows it
    for value in (expired, deleted):
        client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}]
            )
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=no_terms, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as info:
        await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert "terms of service" in error_body(info.value)["message"]


async def test_operational_routes(proxy):
    async with aiohttp.ClientSession() as s:
        for path in ("/healthz", "/readyz", "/openapi.json"):
            async with s.get(proxy.base_url + path) as r:
                assert r.status == 200, path
        async with s.get(proxy.base_url + "/metrics") as r:
            assert "aqueduct_proxy_requests_total" in await r.text()


_ = Limits


async def _thinking_upstream(think: float) -> tuple[web.AppRunner, str]:
    """An upstream that sends a stream's head, then its first event ``think`` seconds later."""

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)  # the head leaves now
        await asyncio.sleep(think)
        delta = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
        await response.write(
            b"data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", **delta}).encode() + b"\n\n"
        )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/v1"


async def test_a_streams_head_waits_briefly_for_its_first_event_not_for_a_thinking_model(proxy, snapshot):
    runner, url = await _thinking_upstream(0.5)
    try:
        await snapshot.put_endpoint("thinking", url)
        await snapshot.put_model("thinker", "thinking", "t")
        value, _ = await snapshot.issue_token()
        await wait_token(proxy.base_url, value)
        for _ in range(100):
            if "thinker" in proxy.proxy.gateway.snapshot.models:
                break
            await asyncio.sleep(0.05)
        body = {"model": "thinker", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {value}"}) as session:
            started = time.perf_counter()
            async with session.post(f"{proxy.v1}/chat/completions", json=body) as answer:
                head_at = time.perf_counter() - started  # the head came alone: the model was thinking
                assert answer.status == 200
                lines = [line async for line in answer.content if line.startswith(b"data: ")]
                first_at = time.perf_counter() - started
        assert head_at < 0.25 and first_at >= 0.5
        assert lines[0].startswith(b"data: {") and lines[-1] == b"data: [DONE]\n"
    finally:
        await runner.cleanup()


async def test_models_retrieve_finds_a_model_of_the_token_by_name_or_alias_and_nothing_else(proxy, snapshot):
    """``client.models.retrieve(...)`` of the OpenAI and Anthropic SDKs: ``GET /v1/models/{model}``."""
    await snapshot.put_model("retrievable", "local", "fake-upstream-model", aliases=["retrievable-alias"])
    value, _ = await snapshot.issue_token(allowed_models=["retrievable"])
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)

    found = await client.models.retrieve("retrievable")
    assert (found.id, found.object, found.owned_by) == ("retrievable", "model", "local")
    assert (await client.models.retrieve("retrievable-alias")).id == "retrievable-alias"
    for hidden in ("gpt-test", "no-such-model"):  # excluded for this token, or unknown: the same 404
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve(hidden)
        assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(base_url=proxy.v1, api_key="aq-nope", max_retries=0).models.retrieve(
            "retrievable"
        )

    native = anthropic.AsyncAnthropic(base_url=proxy.base_url, api_key=value, max_retries=0)
    assert (await native.models.retrieve("retrievable")).type == "model"
    with pytest.raises(anthropic.NotFoundError) as absent:
        await native.models.retrieve("gpt-test")
    assert absent.value.response.json()["type"] == "error"
