"""What users of the official SDKs reach for beyond the README's snippet, against the product as
``aqueduct up`` starts it: ``models.retrieve`` of both SDKs, and refusals under Anthropic's Messages API in
Anthropic's format even when no route matches (a wrong method, an API the gateway does not serve); and an
analyst's INSERT in ``aqueduct sql``, refused as the write it is."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_models_retrieve_with_both_sdks(stack: Stack) -> None:
    stack.login_admin()
    value = stack.cli("tokens", "create", "--name", "retriever", "--quiet").stdout.strip()
    client = openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=value, max_retries=0)

    model = client.models.retrieve("fake-model")
    assert (model.id, model.object, model.owned_by) == ("fake-model", "model", "fake")
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]

    native = anthropic.Anthropic(base_url=stack.urls["proxy"], api_key=value, max_retries=0)
    assert native.models.retrieve("fake-model").id == "fake-model"
    with pytest.raises(anthropic.NotFoundError) as absent:
        native.models.retrieve("no-such-model")
    assert absent.value.response.json()["type"] == "error"


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/messages"), ("POST", "/v1/messages/batches")])
def test_refusals_under_the_messages_api_are_anthropics(stack: Stack, method: str, path: str) -> None:
    stack.login_admin()
    value = stack.cli("tokens", "create", "--name", "anthropic-refusals", "--quiet").stdout.strip()
    answer = httpx.request(
        method,
        stack.urls["proxy"] + path,
        headers={"x-api-key": value, "anthropic-version": "2023-06-01"},
        json={} if method == "POST" else None,
        timeout=10,
    )
    assert answer.status_code in (400, 404)
    body = answer.json()
    assert body["type"] == "error" and body["error"]["type"] in ("invalid_request_error", "not_found_error")


def test_an_insert_in_aqueduct_sql_is_refused_as_a_write(stack: Stack) -> None:
    stack.login_admin()
    refused = stack.cli("sql", "INSERT INTO usage_events (event_id) VALUES ('forged')", check=False)
    assert refused.returncode != 0
    assert "only read-only queries are allowed" in refused.stderr
    counted = stack.cli(
        "sql", "SELECT count() FROM usage_events WHERE event_id = 'forged'", "--format", "json"
    )
    assert json.loads(counted.stdout) == [{"count()": 0}]


def test_aqueduct_token_read_with_its_newline_works(stack: Stack) -> None:
    stack.login_admin()
    value = stack.cli("tokens", "create", "--name", "from-a-file", "--quiet").stdout.strip()
    me = stack.cli("whoami", env={"AQUEDUCT_TOKEN": f" {value}\n"})
    assert "admin" in me.stdout


def test_a_huge_unknown_model_name_is_not_echoed_back_whole(stack: Stack) -> None:
    stack.login_admin()
    value = stack.cli("tokens", "create", "--name", "huge-ids", "--quiet").stdout.strip()
    client = openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=value, max_retries=0)
    name = "m" * 100_000
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
    message = missing.value.body["message"]  # type: ignore[index]
    assert len(message) < 400 and "100,000 characters" in message
    answer = httpx.post(  # an unknown endpoint slug of 5,000 characters
        f"{stack.urls['proxy']}/{'s' * 5000}/v1/chat/completions",
        headers={"Authorization": f"Bearer {value}"},
        json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["code"] == "model_not_found" and len(error["message"]) < 400, error


def test_a_token_sent_as_x_api_key_too_never_reaches_the_upstream(stack: Stack, upstream: Any) -> None:
    stack.login_admin()
    value = stack.cli("tokens", "create", "--name", "two-headers", "--quiet").stdout.strip()
    client = openai.OpenAI(
        base_url=f"{stack.urls['proxy']}/v1",
        api_key=value,
        max_retries=0,
        default_headers={"x-api-key": value},  # as some generic clients send it, beside Authorization
    )
    httpx.delete(upstream.base + "/_requests")
    client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    client.embeddings.create(model="fake-model", input="hi")
    seen = httpx.get(upstream.base + "/_requests").json()
    assert len(seen) == 2
    for request in seen:
        assert all(value not in v for v in request["headers"].values()), request["headers"]
