"""Limits held in one Valkey are exact across proxy replicas: three processes, one budget per minute."""

from __future__ import annotations

import asyncio
import itertools

import openai
import pytest

from aqueduct_libs.snapshot import Limits
from aqueduct_proxy.adapters.tokenizer import TokenCounter
from conftest import spawn_proxy, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey, pytest.mark.slow]


@pytest.fixture(scope="module")
def three_proxies(nats_url, valkey_url, snapshot, tmp_path_factory):
    processes, ports = [], []
    for i in range(3):
        process, port = spawn_proxy(nats_url, valkey_url, tmp_path_factory.mktemp(f"replica{i}"))
        processes.append(process)
        ports.append(port)
    yield [f"http://127.0.0.1:{port}" for port in ports]
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(30)


async def _attempts(bases, value, count, concurrency=24, **request):
    clients = [openai.AsyncOpenAI(base_url=b + "/v1", api_key=value, max_retries=0) for b in bases]
    rotation = itertools.cycle(clients)
    queue = [next(rotation) for _ in range(count)]
    ok, refused = [], []
    lock = asyncio.Semaphore(concurrency)

    async def one(client):
        async with lock:
            try:
                ok.append(await client.chat.completions.with_raw_response.create(model="gpt-test", **request))
            except openai.RateLimitError as exc:
                refused.append(exc)

    await asyncio.gather(*(one(c) for c in queue))
    for client in clients:
        await client.close()
    return ok, refused


async def _token(snapshot, bases, limits):
    value, _ = await snapshot.issue_token(limits=limits)
    for base in bases:
        await wait_token(base, value)
    return value


async def test_requests_per_minute_exact_across_three_replicas(three_proxies, snapshot):
    value = await _token(snapshot, three_proxies, Limits(requests_per_minute=60))
    ok, refused = await _attempts(
        three_proxies, value, 600, messages=[{"role": "user", "content": "hi"}], max_tokens=1
    )
    assert len(ok) == 60 and len(refused) == 540
    for exc in refused:
        assert int(exc.response.headers["retry-after"]) >= 1
        assert exc.response.headers["x-ratelimit-limit-requests"] == "60"
        assert exc.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert exc.response.headers["x-ratelimit-reset-requests"].endswith("s")
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok)
    assert remaining == list(range(60))


async def test_input_tokens_per_minute_exact_across_three_replicas(three_proxies, snapshot):
    messages = [{"role": "user", "content": "the quick brown fox jumps over the lazy dog"}]
    per_request = TokenCounter().count({"messages": messages})
    limit = per_request * 25 + per_request // 2  # room for exactly 25 requests
    value = await _token(snapshot, three_proxies, Limits(input_tokens_per_minute=limit))
    ok, refused = await _attempts(three_proxies, value, 200, messages=messages, max_tokens=1)
    assert len(ok) == 25 and len(refused) == 175
    assert all(int(exc.response.headers["retry-after"]) >= 1 for exc in refused)
    assert all(exc.response.headers["x-ratelimit-limit-tokens"] == str(limit) for exc in refused)


async def test_output_tokens_per_minute_exact_across_three_replicas(three_proxies, snapshot):
    # max_tokens reserves output tokens up front, so concurrent requests cannot overshoot.
    value = await _token(snapshot, three_proxies, Limits(output_tokens_per_minute=100))
    ok, refused = await _attempts(
        three_proxies, value, 120, messages=[{"role": "user", "content": "hi"}], max_tokens=10
    )
    assert len(ok) == 10 and len(refused) == 110
    assert all(int(exc.response.headers["retry-after"]) >= 1 for exc in refused)


async def test_output_tokens_charged_from_reported_usage(three_proxies, snapshot):
    # No max_tokens: the upstream answers 5 tokens each, charged after the answer; one request at a time.
    value = await _token(snapshot, three_proxies, Limits(output_tokens_per_minute=50))
    ok, refused = await _attempts(
        three_proxies, value, 30, concurrency=1, messages=[{"role": "user", "content": "hi"}]
    )
    assert len(ok) == 10 and len(refused) == 20


async def test_streamed_output_tokens_charged_before_the_stream_ends(three_proxies, snapshot):
    value = await _token(snapshot, three_proxies, Limits(output_tokens_per_minute=50))
    clients = [openai.AsyncOpenAI(base_url=b + "/v1", api_key=value, max_retries=0) for b in three_proxies]
    served = refused = 0
    for i in range(15):  # one at a time, each on the next replica
        try:
            stream = await clients[i % 3].chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            async for _ in stream:
                pass
            served += 1
        except openai.RateLimitError:
            refused += 1
    assert (served, refused) == (10, 5)
    for client in clients:
        await client.close()


async def test_credits_taken_far_from_a_limit_never_let_it_be_exceeded(three_proxies, snapshot, valkey_url):
    """A limit large enough for the replicas to take credits (calls admitted without asking Valkey):
    run to the limit across three replicas, no more calls are served than the limit, hardly fewer
    (what the replicas held unused when the limit was reached), and once the credits are back the
    counter holds exactly the calls served."""
    from redis.asyncio import Redis

    limit = 2_400
    value = await _token(snapshot, three_proxies, Limits(requests_per_minute=limit))
    valkey = Redis.from_url(valkey_url)
    await valkey.config_resetstat()
    ok, refused = await _attempts(
        three_proxies, value, 2_700, messages=[{"role": "user", "content": "hi"}], max_tokens=1
    )
    # Fewer checks in Valkey than calls: some were admitted from credits.
    assert (await valkey.info("commandstats"))["cmdstat_evalsha"]["calls"] < 2_700
    assert len(ok) <= limit
    assert len(ok) >= limit - 3 * 20, f"only {len(ok)} of {limit} served"
    assert len(ok) + len(refused) == 2_700
    token_id = snapshot.tokens[value].token_id
    try:
        for _ in range(50):  # the credits go back a second after they were taken
            if int(await valkey.hget(f"aq:rl:{{{token_id}}}:t:rpm", "t")) == len(ok):
                break
            await asyncio.sleep(0.1)
        assert int(await valkey.hget(f"aq:rl:{{{token_id}}}:t:rpm", "t")) == len(ok)
    finally:
        await valkey.aclose()
