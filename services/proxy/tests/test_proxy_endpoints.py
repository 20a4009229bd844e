"""Every OpenAI route round-trips through the proxy, and /{endpoint-slug}/v1/... reaches that endpoint."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from conftest import usage_events, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey]


@pytest.fixture
async def client_and_grant(proxy, snapshot):
    value, grant = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    yield client, grant, value
    await client.close()


async def _last_forwarded(upstream):
    async with aiohttp.ClientSession() as s, s.get(f"{upstream.base}/_requests") as r:
        return (await r.json())[-1]


async def test_every_route_round_trips(client_and_grant, bus, upstream):
    client, grant, _ = client_and_grant

    completion = await client.completions.create(model="gpt-test", prompt="say three words", max_tokens=3)
    assert completion.choices[0].text == "tok0 tok1 tok2"

    embedding = await client.embeddings.create(model="gpt-test", input=["one two", "three"])
    assert len(embedding.data) == 2 and embedding.usage.prompt_tokens == 3

    response = await client.responses.create(model="gpt-test", input="what is up", max_output_tokens=4)
    assert response.output_text == "tok0 tok1 tok2 tok3"

    speech = await client.audio.speech.create(model="gpt-test", voice="alloy", input="hello")
    assert speech.content.startswith(b"ID3")

    transcript = await client.audio.transcriptions.create(model="gpt-test", file=("a.mp3", b"fake-audio"))
    assert transcript.text == "fake transcription"
    forwarded = await _last_forwarded(upstream)
    assert forwarded["path"] == "/v1/audio/transcriptions"
    assert forwarded["body"]["model"] == "fake-upstream-model" and forwarded["body"]["file"] == "<file a.mp3>"

    translation = await client.audio.translations.create(model="gpt-test", file=("b.wav", b"fake-audio"))
    assert translation.text == "fake transcription"

    image = await client.images.generate(model="gpt-test", prompt="a duck")
    assert image.data[0].b64_json == "aW1n"
    assert (await _last_forwarded(upstream))["body"]["model"] == "fake-upstream-model"

    events = await usage_events(bus, grant.token_id, 7)
    by_route = {e.route: e for e in events}
    assert set(by_route) == {
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/audio/speech",
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/images/generations",
    }
    assert (by_route["/v1/completions"].input_tokens, by_route["/v1/completions"].output_tokens) == (3, 3)
    assert by_route["/v1/embeddings"].input_tokens == 3
    assert (by_route["/v1/responses"].input_tokens, by_route["/v1/responses"].output_tokens) == (3, 4)
    assert all(e.status_code == 200 and e.model == "gpt-test" for e in events)


async def test_endpoint_slug_routes_forward_the_rest_of_the_path(proxy, snapshot, upstream, bus):
    await snapshot.put_endpoint("second", upstream.url)
    await snapshot.put_model("second-model", "second", "fake-second")
    value, grant = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=f"{proxy.base_url}/local/v1", api_key=value, max_retries=0)

    by_name = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi there"}], max_tokens=2
    )
    assert by_name.choices[0].message.content == "tok0 tok1"
    assert (await _last_forwarded(upstream))["body"]["model"] == "fake-upstream-model"
    # The upstream's own model id works on its endpoint's route too.
    await client.chat.completions.create(
        model="fake-upstream-model", messages=[{"role": "user", "content": "hi"}], max_tokens=1
    )
    listed = await client.models.list()  # forwarded to the endpoint as it is
    assert [m.id for m in listed.data] == ["fake-model"]

    with pytest.raises(openai.NotFoundError):  # a model of another endpoint
        await client.chat.completions.create(
            model="second-model", messages=[{"role": "user", "content": "x"}]
        )
    missing = openai.AsyncOpenAI(base_url=f"{proxy.base_url}/nowhere/v1", api_key=value, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        await missing.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])

    events = await usage_events(bus, grant.token_id, 3)
    routes = sorted(e.route for e in events)
    assert routes == ["/local/v1/chat/completions", "/local/v1/chat/completions", "/local/v1/models"]
    assert all(e.endpoint == "local" for e in events)


async def test_endpoint_slug_route_respects_allowed_models(proxy, snapshot):
    value, _ = await snapshot.issue_token(allowed_models=["other-model"])
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=f"{proxy.base_url}/local/v1", api_key=value, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    answer = await client.chat.completions.create(
        model="other-model", messages=[{"role": "user", "content": "x"}], max_tokens=1
    )
    assert answer.choices[0].message.content == "tok0"


async def test_endpoint_slug_route_checks_the_model_whatever_the_content_type(proxy, snapshot, upstream):
    """A JSON body declared as text/plain is refused as on /v1/ (never forwarded unread), so exclusions
    cannot be bypassed; declared as JSON, its model is checked."""
    value, _ = await snapshot.issue_token(allowed_models=["other-model"])
    await wait_token(proxy.base_url, value)
    body = b'{"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}'
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {value}"}) as s:
        async with s.post(
            f"{proxy.base_url}/local/v1/chat/completions", data=body, headers={"Content-Type": "text/plain"}
        ) as r:
            assert r.status == 400
            assert "Unsupported content type" in (await r.json())["error"]["message"]
        async with s.post(
            f"{proxy.base_url}/local/v1/chat/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as r:
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "model_not_allowed"
        # Chat without a model at all is refused on an endpoint's route too.
        async with s.post(f"{proxy.base_url}/local/v1/chat/completions", json={"messages": []}) as r:
            assert r.status == 400


async def test_endpoint_slug_route_forwards_only_model_apis(proxy, client_and_grant):
    """An upstream's files, batches or fine-tuning APIs would act with the shared provider key: refused."""
    _, _, value = client_and_grant
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {value}"}) as s:
        for tail in ("files", "batches", "fine_tuning/jobs", "assistants", "vector_stores"):
            async with s.get(f"{proxy.base_url}/local/v1/{tail}") as r:
                assert r.status == 404, tail
                assert (await r.json())["error"]["code"] == "unknown_url"


async def test_unknown_route_is_an_openai_404(proxy, client_and_grant):
    _, _, value = client_and_grant
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {value}"}) as s:
        async with s.post(f"{proxy.v1}/no/such/route", json={}) as r:
            assert r.status == 404 and "error" in await r.json()
