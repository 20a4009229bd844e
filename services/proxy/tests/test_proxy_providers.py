"""Non-OpenAI providers go through LiteLLM's translation (imported only when such an endpoint is used).

The only upstream double allowed is OpenAI-compatible, so the LiteLLM path is exercised with a
"litellm" endpoint whose model names LiteLLM's OpenAI provider; Anthropic takes the same code path.
"""

from __future__ import annotations

import openai
import pytest

from conftest import usage_events, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey, pytest.mark.slow]


async def test_chat_through_litellm_plain_and_streamed(proxy, snapshot, bus, upstream_url):
    await snapshot.put_endpoint("via-litellm", upstream_url, provider="litellm")
    await snapshot.put_model("translated", "via-litellm", "openai/fake-upstream-model")
    value, grant = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0, timeout=60)

    answer = await client.chat.completions.create(
        model="translated", messages=[{"role": "user", "content": "one two three"}], max_tokens=4
    )
    assert answer.choices[0].message.content == "tok0 tok1 tok2 tok3"

    stream = await client.chat.completions.create(
        model="translated", messages=[{"role": "user", "content": "one two"}], max_tokens=3, stream=True
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2"

    events = sorted(await usage_events(bus, grant.token_id, 2), key=lambda e: e.streamed)
    assert [(e.input_tokens, e.output_tokens, e.streamed) for e in events] == [(3, 4, False), (2, 3, True)]
    assert all(e.endpoint == "via-litellm" and e.model == "translated" for e in events)

    with pytest.raises(openai.BadRequestError):  # LiteLLM endpoints serve chat completions only
        await client.embeddings.create(model="translated", input="x")
