"""The shared fixtures start real engines that answer."""

import httpx
import nats
import pytest
import redis.asyncio as redis

pytestmark = [pytest.mark.nats, pytest.mark.valkey]


async def test_nats_has_jetstream(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    info = await nc.jetstream().account_info()
    assert info.limits is not None
    await nc.close()


async def test_valkey_answers(valkey_url: str) -> None:
    client = redis.from_url(valkey_url)
    assert await client.incr("fixture-check") >= 1
    await client.aclose()


async def test_upstream_counts_words(upstream_url: str) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{upstream_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 4},
        )
    assert answer.json()["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
