"""The limiter against Valkey directly (both clients), and what happens while Valkey is unreachable."""

from __future__ import annotations

import asyncio
import uuid

import openai
import pytest
from redis.asyncio import Redis

from aqueduct_cli.embedded import free_port
from aqueduct_libs.snapshot import Limits
from aqueduct_proxy.adapters.limiter import Admission, Counter, Limiter, LimiterDown, Rejection
from aqueduct_proxy.adapters.resp import RespClient, _encode
from conftest import common_settings, proxy_settings, start_in_process, stop_in_process, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey]


@pytest.mark.parametrize("client", ["resp", "redis-py"])
async def test_window_admits_up_to_the_limit_then_says_when_to_retry(valkey_url, client):
    limiter = Limiter.from_url(valkey_url) if client == "resp" else Limiter(Redis.from_url(valkey_url))
    key = f"aq:test:{uuid.uuid4().hex}"
    counters = [Counter(key + ":rpm", "requests", 3, 1), Counter(key + ":itpm", "input_tokens", 100, 30)]
    results = [await limiter.admit(counters) for _ in range(4)]
    assert [type(r) for r in results] == [Admission, Admission, Admission, Rejection]
    assert results[2].used == [3, 90]
    rejection = results[3]
    assert rejection.counter.dimension == "requests" and 1 <= rejection.retry_after <= 60

    # Output tokens: reserved up front, settled from the reported usage.
    out = [Counter(key + ":otpm", "output_tokens", 10, 8)]
    admitted = await limiter.admit(out)
    await limiter.settle(admitted, 2)  # only 2 were produced: 8 free again
    assert isinstance(await limiter.admit(out), Admission)
    await limiter.close()


async def test_the_window_slides(valkey_url):
    limiter = Limiter.from_url(valkey_url, window=2)  # a two-second "minute"
    counters = [Counter(f"aq:test:{uuid.uuid4().hex}:rpm", "requests", 3, 1)]
    for _ in range(3):
        assert isinstance(await limiter.admit(counters), Admission)
    refused = await limiter.admit(counters)
    assert isinstance(refused, Rejection) and 1 <= refused.retry_after <= 2
    await asyncio.sleep(refused.retry_after + 0.1)
    admitted = await limiter.admit(counters)
    assert isinstance(admitted, Admission) and admitted.used[0] <= 3
    await asyncio.sleep(2.1)  # everything has left the window
    assert (await limiter.admit(counters)).used == [1]
    await limiter.close()


async def test_unreachable_store_is_an_error_not_a_hang():
    limiter = Limiter.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    with pytest.raises(LimiterDown):
        await limiter.admit([Counter("k", "requests", 1, 1)])
    with pytest.raises(LimiterDown):  # fails fast for a moment after a failure
        await limiter.admit([Counter("k", "requests", 1, 1)])
    await limiter.close()


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_valkey_down_fails_open_by_default_or_closed_by_setting(snapshot, nats_url, tmp_path, mode):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    running = await start_in_process(
        proxy_settings(dead, limits_on_store_failure=mode), common_settings(nats_url, tmp_path)
    )
    try:
        value, _ = await snapshot.issue_token(limits=Limits(requests_per_minute=5))
        await wait_token(running.base_url, value)
        client = openai.AsyncOpenAI(base_url=running.v1, api_key=value, max_retries=0)
        request = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
        if mode == "open":
            for _ in range(8):  # more than the limit: nothing can count them
                await client.chat.completions.create(**request)
        else:
            with pytest.raises(openai.InternalServerError) as info:
                await client.chat.completions.create(**request)
            assert info.value.status_code == 503
        await client.close()
    finally:
        await stop_in_process(running)


async def test_body_size_limit_and_upstream_time_limit(snapshot, nats_url, valkey_url, tmp_path):
    running = await start_in_process(
        proxy_settings(valkey_url, max_body_bytes=2000, upstream_timeout_seconds=0.5, retries=0),
        common_settings(nats_url, tmp_path),
    )
    try:
        value, _ = await snapshot.issue_token()
        await wait_token(running.base_url, value)
        client = openai.AsyncOpenAI(base_url=running.v1, api_key=value, max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "word " * 1000}]
            )
        assert info.value.status_code == 413
        assert info.value.body["code"] == "request_too_large"
        # The upstream waits 1 s before its first word: more than the proxy's 0.5 s read limit.
        stream = await client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "x"}],
            max_tokens=2,
            stream=True,
            extra_headers={"x-fake-delay": "1"},
        )
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
        await client.close()
    finally:
        await stop_in_process(running)


async def test_a_counter_outlives_its_last_charge_by_the_window(valkey_url):
    # The expiry is pushed back by the first charge of each second, not by every request: a counter
    # charged again in a later second lives on for the window from then, a cost-0 counter too.
    limiter = Limiter.from_url(valkey_url)
    key = f"aq:test:{uuid.uuid4().hex}"
    counters = [Counter(key + ":rpm", "requests", 1000, 1), Counter(key + ":otpm", "output_tokens", 1000, 0)]
    redis = RespClient(valkey_url)
    try:
        for _ in range(3):
            assert isinstance(await limiter.admit(counters), Admission)
        ttls = [await redis.execute("TTL", c.key) for c in counters]
        assert all(60 < ttl <= 65 for ttl in ttls), ttls
        await asyncio.sleep(2.1)
        assert isinstance(await limiter.admit(counters), Admission)
        ttls = [await redis.execute("TTL", c.key) for c in counters]
        assert all(ttl >= 64 for ttl in ttls), ttls
    finally:
        await redis.close()
        await limiter.close()


async def test_an_awaited_command_leaves_at_once_when_nothing_is_in_flight(valkey_url):
    client = RespClient(valkey_url)
    try:
        await client.execute("PING")  # connected
        protocol = client._protocol
        assert protocol is not None
        loop = asyncio.get_running_loop()
        first, second, third = loop.create_future(), loop.create_future(), loop.create_future()
        protocol.send_awaited(_encode(("PING",)), first)
        assert protocol._unsent == []  # written already, not at the end of the turn
        # A reply is awaited now: what follows in this turn leaves together, at its end.
        protocol.send_awaited(_encode(("ECHO", "a")), second)
        protocol.send_awaited(_encode(("ECHO", "b")), third)
        assert len(protocol._unsent) == 2
        assert [await first, await second, await third] == ["PONG", b"a", b"b"]
    finally:
        await client.close()
