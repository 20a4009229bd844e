"""The client's gateway token never reaches a model server, whichever header carries it: a client that
sends it as ``x-api-key`` as well as ``Authorization`` (some generic clients send both) must not hand it
to the upstream of a chat, embeddings, slug or Responses call."""

from __future__ import annotations

import aiohttp
import pytest

from conftest import wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey]

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "one two"}], "max_tokens": 2}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", CHAT),
        ("/local/v1/chat/completions", CHAT),
        ("/v1/embeddings", {"model": "gpt-test", "input": "one two"}),
    ],
)
async def test_the_gateway_token_in_any_header_is_not_forwarded(proxy, snapshot, upstream, path, body):
    value, _ = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    headers = {
        "Authorization": f"Bearer {value}",
        "x-api-key": value,
        "x-goog-api-key": value,
        "x-stainless-lang": "python",  # an SDK hint: still passes
    }
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{proxy.base_url}{path}", json=body, headers=headers) as answer:
            assert answer.status == 200, await answer.text()
        async with s.get(f"{upstream.base}/_requests") as r:
            forwarded = (await r.json())[-1]
    assert all(value not in v for v in forwarded["headers"].values()), forwarded["headers"]
    assert forwarded["headers"].get("x-stainless-lang") == "python"


def test_the_messages_routes_headers_keep_anthropics_options_and_drop_credentials() -> None:
    from multidict import CIMultiDict

    from aqueduct_proxy.wire.messages import anthropic_headers

    class _Request:
        headers = CIMultiDict(
            {
                "x-api-key": "aq-secret-value",
                "x-custom-trace": "carries aq-secret-value inside",
                "anthropic-version": "2023-06-01",
                "anthropic-beta": "prompt-caching-2024-07-31",
                "x-stainless-os": "Linux",
                "Authorization": "Bearer aq-other",
            }
        )

    passed = anthropic_headers(_Request())  # type: ignore[arg-type]
    assert passed == {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "prompt-caching-2024-07-31",
        "x-stainless-os": "Linux",
    }
