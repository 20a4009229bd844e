"""Budgets from accounting's quota bucket, retries, fallback models and the cooldown of a failing endpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import openai
import pytest

from aqueduct_cli.embedded import free_port
from aqueduct_libs import names
from aqueduct_libs.snapshot import QuotaDecision
from conftest import error_body, usage_events, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey]


async def _until(predicate, tries: int = 100):
    import asyncio

    for _ in range(tries):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


async def test_budget_decision_refuses_until_it_lifts(proxy, snapshot, bus):
    value, _ = await snapshot.issue_token(team_id="team-budget")
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    quota = await bus.key_value(names.QUOTA_BUCKET)
    now = datetime.now(UTC)
    decision = QuotaDecision(
        scope="team",
        scope_id="team-budget",
        budget="team daily budget of $5.00",
        period="day",
        until=now + timedelta(hours=1),
        decided_at=now,
    )
    await quota.put("team.team-budget", decision.model_dump_json().encode())

    async def refused() -> bool:
        try:
            await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "x"}]
            )
        except openai.RateLimitError as exc:
            assert "team daily budget of $5.00" in error_body(exc)["message"]
            return True
        return False

    await _until(refused)
    await quota.delete("team.team-budget")

    async def served() -> bool:
        return not await refused()

    await _until(served)
    expired = decision.model_copy(update={"until": now - timedelta(seconds=1)})
    await quota.put("team.team-budget", expired.model_dump_json().encode())
    await _until(served)


async def test_retries_hide_transient_upstream_failures(proxy, snapshot, upstream, bus):
    value, grant = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    async with aiohttp.ClientSession() as s:
        await s.post(f"{upstream.base}/_fail", json={"status": 503, "times": 2})
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    answer = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "a b"}], max_tokens=2
    )
    assert answer.choices[0].message.content == "tok0 tok1"
    [event] = await usage_events(bus, grant.token_id, 1)
    assert event.status_code == 200 and event.output_tokens == 2


async def test_upstream_errors_pass_through_after_retries(proxy, snapshot):
    value, _ = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-status": "500"},
        )
    with pytest.raises(openai.BadRequestError):  # 4xx from the upstream: not retried, passed on
        await client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-status": "400"},
        )


async def test_an_upstream_refusing_the_gateways_key_is_a_502_not_the_clients_401(proxy, snapshot):
    value, _ = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    for status in ("401", "403"):
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(
                model="gpt-test",
                messages=[{"role": "user", "content": "x"}],
                extra_headers={"x-fake-status": status},
            )
        assert refused.value.status_code == 502
        assert "refused the gateway's credentials" in refused.value.message


async def test_fallback_model_and_cooldown_of_a_dead_endpoint(proxy, snapshot, bus):
    await snapshot.put_endpoint("dead", f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    await snapshot.put_model("flaky", "dead", "whatever", fallbacks=["gpt-test"])
    value, grant = await snapshot.issue_token()
    await wait_token(proxy.base_url, value)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    registry = proxy.proxy.gateway.metrics.registry

    def dead_attempts() -> float:
        return sum(
            sample.value
            for metric in registry.collect()
            if metric.name == "aqueduct_proxy_upstream_errors"
            for sample in metric.samples
            if sample.labels.get("endpoint") == "dead" and sample.name.endswith("_total")
        )

    async def flaky_is_known() -> bool:
        return (
            "flaky" in proxy.proxy.gateway.snapshot.models
            and "dead" in proxy.proxy.gateway.snapshot.endpoints
        )

    await _until(flaky_is_known)
    before = dead_attempts()
    for _ in range(2):  # 3 attempts each (1 + 2 retries): 6 failures, the endpoint cools down
        answer = await client.chat.completions.create(
            model="flaky", messages=[{"role": "user", "content": "x"}], max_tokens=1
        )
        assert answer.choices[0].message.content == "tok0"
    assert dead_attempts() - before == 6
    await client.chat.completions.create(
        model="flaky", messages=[{"role": "user", "content": "x"}], max_tokens=1
    )
    assert dead_attempts() - before == 6  # skipped while cooling down

    events = await usage_events(bus, grant.token_id, 3)
    assert [e.model for e in events] == ["gpt-test"] * 3  # accounted as the model that answered
    assert all(e.status_code == 200 for e in events)
