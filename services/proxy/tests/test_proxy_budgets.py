"""Budgets at admission (real Valkey, real NATS, the openai SDK): a request is refused when its worst case
would cross a budget, the refusal says which budget, how much is left and when it resets, and every
reservation is settled to the real cost: answers, streams cut short, clients gone, upstream failures,
and holds of a proxy that died."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import openai
import pytest
from redis.asyncio import Redis

from aqueduct_cli.embedded import EmbeddedValkey, free_port
from aqueduct_libs import names
from aqueduct_libs.budgets import DUE_KEY, HOLDS_KEY, counter_key, periods_at
from aqueduct_libs.pricing import Price, TokenClasses
from aqueduct_libs.snapshot import BudgetRule
from aqueduct_proxy.adapters.budget_store import BudgetCounter, BudgetHold, BudgetRefusal, BudgetStore
from aqueduct_proxy.adapters.resp import RespClient
from aqueduct_proxy.application.budgeting import Budgeting
from aqueduct_proxy.domain.budgets import budget_counters
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.metrics import ProxyMetrics
from conftest import (
    common_settings,
    error_body,
    proxy_settings,
    start_in_process,
    stop_in_process,
    usage_events,
    wait_token,
)

pytestmark = [pytest.mark.nats, pytest.mark.valkey]

# $1 per million input tokens, $2 per million output tokens.
PRICE = Price(1_000, 2_000)
MESSAGES = [{"role": "user", "content": "one two three"}]


@pytest.fixture(scope="module")
async def priced(snapshot) -> str:
    await snapshot.put_model(
        "priced-model",
        "local",
        "fake-priced",
        input_price_nanos_per_token=1_000,
        output_price_nanos_per_token=2_000,
    )
    return "priced-model"


@pytest.fixture
async def valkey(valkey_url):
    client = Redis.from_url(valkey_url)
    yield client
    await client.aclose()


async def _budget(bus, scope: str, scope_id: str, **limits: int) -> None:
    kv = await bus.key_value(names.AUTH_SNAPSHOT_BUCKET)
    rule = BudgetRule(scope=scope, scope_id=scope_id, **limits)  # type: ignore[arg-type]
    await kv.put(names.snapshot_budget_key(scope, scope_id), rule.model_dump_json().encode())


async def _known(proxy, scope: str, scope_id: str) -> None:
    for _ in range(200):
        if f"{scope}.{scope_id}" in proxy.proxy.gateway.snapshot.budgets:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the proxy never learned the budget")


async def _counter(valkey, scope: str, scope_id: str, kind: str = "day") -> dict[str, int]:
    day, month = periods_at(datetime.now(UTC))
    raw = await valkey.hgetall(counter_key(scope, scope_id, day if kind == "day" else month))
    return {k.decode(): int(v) for k, v in raw.items()} | {}


async def _settled(valkey, scope: str, scope_id: str, within: float = 5.0) -> dict[str, int]:
    """The counter once nothing is held on it any more."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        counter = await _counter(valkey, scope, scope_id)
        if counter.get("hn", 0) == 0 and counter.get("ht", 0) == 0:
            return counter
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still held: {counter}")
        await asyncio.sleep(0.05)


def _cost(event) -> int:
    return PRICE.cost(TokenClasses(event.input_tokens, event.output_tokens, event.cached_tokens))


async def _team_token(snapshot, proxy, bus, **limits: int) -> tuple[str, str, object]:
    team = "team-" + uuid.uuid4().hex[:8]
    await _budget(bus, "team", team, **limits)
    value, grant = await snapshot.issue_token(team_id=team)
    await wait_token(proxy.base_url, value)
    await _known(proxy, "team", team)
    return team, value, grant


async def test_refusal_names_the_budget_what_is_left_and_when_it_resets(proxy, snapshot, bus, priced, valkey):
    # $0.002 a day: one request capped at 500 output tokens ($0.001 + input) fits, a second does not.
    team, value, grant = await _team_token(snapshot, proxy, bus, daily_nanos=2_000_000)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value)  # the SDK's default retries on
    await client.chat.completions.create(model=priced, messages=MESSAGES, max_tokens=500)
    with pytest.raises(openai.RateLimitError) as refused:
        await client.chat.completions.create(model=priced, messages=MESSAGES, max_tokens=500)
    error = error_body(refused.value)
    assert refused.value.status_code == 429
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    message = error["message"]
    assert f"the team daily budget of $0.002 (team {team})" in message
    assert f"It resets at {tomorrow}T00:00:00Z" in message
    assert "$0.00 " not in message and "left" in message
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert refused.value.response.headers["x-aqueduct-budget-reset"] == f"{tomorrow}T00:00:00Z"
    # What was served is exactly what the counter holds: the real cost of the one answer.
    [event] = await usage_events(bus, grant.token_id, 1)
    assert (await _settled(valkey, "team", team))["sn"] == _cost(event) <= 2_000_000
    await client.close()


async def test_a_token_budget_counts_input_and_output(proxy, snapshot, bus, priced, valkey):
    user = "user-" + uuid.uuid4().hex[:8]
    await _budget(bus, "user", user, monthly_tokens=100)
    value, grant = await snapshot.issue_token(user_id=user)
    await wait_token(proxy.base_url, value)
    await _known(proxy, "user", user)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    served = 0
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(20):
            await client.chat.completions.create(model=priced, messages=MESSAGES, max_tokens=20)
            served += 1
    assert "the user monthly budget of 100 tokens" in error_body(refused.value)["message"]
    events = await usage_events(bus, grant.token_id, served)
    used = sum(e.input_tokens + e.output_tokens for e in events)
    assert served >= 2 and used <= 100
    counter = await _counter(valkey, "user", user, "month")
    assert counter["st"] == used and counter.get("ht", 0) == 0
    await client.close()


async def test_a_model_with_a_dearer_fallback_reserves_the_fallbacks_price(proxy, snapshot, bus, priced):
    await snapshot.put_model(
        "cheap-with-fallback",
        "local",
        "fake-cheap",
        input_price_nanos_per_token=1,
        output_price_nanos_per_token=1,
        fallbacks=[priced],
    )
    # $0.0005: 100 output tokens of the cheap model fit easily; of its fallback ($0.0002 + input) too;
    # 400 of the fallback ($0.0008) do not, though the cheap model would cost $0.0000004.
    _, value, _ = await _team_token(snapshot, proxy, bus, daily_nanos=500_000)
    for _ in range(100):
        if "cheap-with-fallback" in proxy.proxy.gateway.snapshot.models:
            break
        await asyncio.sleep(0.05)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    await client.chat.completions.create(model="cheap-with-fallback", messages=MESSAGES, max_tokens=100)
    with pytest.raises(openai.RateLimitError) as refused:
        await client.chat.completions.create(model="cheap-with-fallback", messages=MESSAGES, max_tokens=400)
    assert "this request may cost up to $0.00081" in error_body(refused.value)["message"]
    await client.close()


async def test_embeddings_reserve_their_input_only(proxy, snapshot, bus, priced, valkey):
    team, value, grant = await _team_token(snapshot, proxy, bus, daily_nanos=1_000_000_000)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    await client.embeddings.create(model=priced, input="one two three four")
    [event] = await usage_events(bus, grant.token_id, 1)
    assert event.output_tokens == 0
    assert (await _settled(valkey, "team", team))["sn"] == _cost(event) > 0
    await client.close()


async def test_a_stream_cut_short_settles_to_what_was_produced(proxy, snapshot, bus, priced, valkey):
    team, value, grant = await _team_token(snapshot, proxy, bus, daily_nanos=1_000_000_000)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    # The upstream breaks off after 5 of 400 words.
    with pytest.raises(openai.APIError):
        stream = await client.chat.completions.create(
            model=priced,
            messages=MESSAGES,
            max_tokens=400,
            stream=True,
            extra_headers={"x-fake-break-after": "5"},
        )
        async for _ in stream:
            pass
    [event] = await usage_events(bus, grant.token_id, 1)
    assert event.cut_short and event.output_tokens == 5
    counter = await _settled(valkey, "team", team)
    assert counter["sn"] == _cost(event) < PRICE.cost(TokenClasses(3, 400))
    await client.close()


async def test_a_client_gone_mid_stream_settles_to_what_was_produced(proxy, snapshot, bus, priced, valkey):
    team, value, grant = await _team_token(snapshot, proxy, bus, daily_nanos=1_000_000_000)
    body = {"model": priced, "messages": MESSAGES, "max_tokens": 200, "stream": True}
    headers = {"Authorization": f"Bearer {value}", "x-fake-delay": "0.05"}
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{proxy.v1}/chat/completions", json=body, headers=headers)
        await response.content.readline()
        await response.content.readline()
        response.close()  # the client goes away after the first chunk
    [event] = await usage_events(bus, grant.token_id, 1, wait=15)
    assert event.cut_short and event.output_tokens < 200
    assert (await _settled(valkey, "team", team, within=15))["sn"] == _cost(event)


async def test_upstream_failures_release_the_hold(proxy, snapshot, bus, priced, valkey):
    team, value, grant = await _team_token(snapshot, proxy, bus, daily_nanos=1_000_000_000)
    await snapshot.put_endpoint("budget-dead", f"http://127.0.0.1:{free_port()}/v1")
    await snapshot.put_model("dead-model", "budget-dead", "x", input_price_nanos_per_token=1_000)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    for _ in range(100):
        if "dead-model" in proxy.proxy.gateway.snapshot.models:
            break
        await asyncio.sleep(0.05)
    with pytest.raises(openai.InternalServerError):  # the model server cannot be reached: 502
        await client.chat.completions.create(model="dead-model", messages=MESSAGES, max_tokens=100)
    counter = await _settled(valkey, "team", team)
    assert counter.get("sn", 0) == 0  # nothing was served, nothing is charged
    with pytest.raises(openai.InternalServerError):  # the upstream answers 500: its own error
        await client.chat.completions.create(
            model=priced, messages=MESSAGES, max_tokens=100, extra_headers={"x-fake-status": "500"}
        )
    [event] = await usage_events(bus, grant.token_id, 1)
    assert event.status_code == 500
    assert (await _settled(valkey, "team", team))["sn"] == _cost(event)  # as accounting will price it
    await client.close()


async def test_holds_of_a_proxy_that_died_expire(valkey_url, valkey):
    scope_id = "team-" + uuid.uuid4().hex[:8]
    rule = BudgetRule(scope="team", scope_id=scope_id, daily_nanos=1_000)
    counters = budget_counters([rule], datetime.now(UTC))
    crashed = BudgetStore(Redis.from_url(valkey_url), hold_seconds=1)
    held = await crashed.reserve(counters, 800, 10)
    assert isinstance(held, BudgetHold)  # ... and the proxy that holds it dies without settling
    alive = BudgetStore(Redis.from_url(valkey_url), hold_seconds=60)
    assert not isinstance(await alive.reserve(counters, 800, 10), BudgetHold)  # 800 + 800 > 1,000
    await asyncio.sleep(2.2)
    again = await alive.reserve(counters, 800, 10)
    assert isinstance(again, BudgetHold)  # the dead proxy's hold was released by this admission
    counter = await _counter(valkey, "team", scope_id)
    assert (counter["hn"], counter["ht"]) == (800, 10)
    await alive.settle(again, 300, 4)
    counter = await _counter(valkey, "team", scope_id)
    assert (counter["sn"], counter["hn"], counter["st"], counter["ht"]) == (300, 0, 4, 0)
    assert not [m for m in await valkey.zrange(DUE_KEY, 0, -1) if m.startswith(again.id.encode())]


async def test_a_hold_recorded_by_the_previous_version_is_released_too(valkey_url, valkey):
    # Before: the due set held the id, the holds hash its record "<nanos> <tokens> <counter key>...".
    scope_id = "team-" + uuid.uuid4().hex[:8]
    counters = budget_counters(
        [BudgetRule(scope="team", scope_id=scope_id, daily_nanos=1_000)], datetime.now(UTC)
    )
    old_id = "old-" + uuid.uuid4().hex[:8]
    key = counters[0].key
    await valkey.hset(key, mapping={"sn": 0, "st": 0, "hn": 800, "ht": 10})
    await valkey.hset(HOLDS_KEY, old_id, f"800 10 {key}")
    await valkey.zadd(DUE_KEY, {old_id: 1})  # long past its deadline
    store = BudgetStore(Redis.from_url(valkey_url))
    held = await store.reserve(counters, 900, 1)
    assert isinstance(held, BudgetHold) and held.counted == (900, 1)
    assert not await valkey.hexists(HOLDS_KEY, old_id) and await valkey.zscore(DUE_KEY, old_id) is None
    await store.settle(held, 0, 0)


async def test_valkey_gone_mid_run_one_process_still_holds_the_budget(
    snapshot, bus, nats_url, tmp_path, priced
):
    valkey = EmbeddedValkey(tmp_path / "valkey").start()
    running = await start_in_process(proxy_settings(valkey.url), common_settings(nats_url, tmp_path))
    try:
        # $0.01: requests cost about $0.0004 (200 output tokens), so some 25 fit.
        _, value, grant = await _team_token(snapshot, running, bus, daily_nanos=10_000_000)
        client = openai.AsyncOpenAI(base_url=running.v1, api_key=value, max_retries=0)
        for _ in range(5):
            await client.chat.completions.create(model=priced, messages=MESSAGES, max_tokens=200)
        valkey.kill()  # ... and it stays away
        served = 5
        with pytest.raises(openai.RateLimitError) as refused:
            for _ in range(100):
                await client.chat.completions.create(model=priced, messages=MESSAGES, max_tokens=200)
                served += 1
        assert "budget store is unreachable" in error_body(refused.value)["message"]
        events = await usage_events(bus, grant.token_id, served)
        spent = sum(_cost(e) for e in events)
        assert len(events) == served and 10_000_000 - PRICE.cost(TokenClasses(10, 200)) <= spent <= 10_000_000
        await client.close()
    finally:
        await stop_in_process(running)
        valkey.stop()


async def test_valkey_gone_a_replica_counts_what_was_spent_and_its_own_holds_not_the_others(tmp_path):
    """With Valkey away, each replica may spend what was left: what was spent, less what it holds itself.
    The other replicas' requests in flight then are theirs to count (their real cost reaches ClickHouse and
    accounting's decisions); counted here too, replicas busy when Valkey went away refused a budget that
    was nowhere near used up (the e2e test across replicas failed on it now and then)."""
    valkey = EmbeddedValkey(tmp_path / "valkey").start()
    try:
        _, counters, client = await _team_budget_on_the_fast_client(valkey.url, 1_000)
        other, mine = BudgetStore(Redis.from_url(valkey.url)), BudgetStore(client)
        first = await other.reserve(counters, 300, 0)
        assert isinstance(first, BudgetHold) and await other.settle(first, 200, 0)  # 200 spent
        in_flight = await other.reserve(counters, 500, 0)  # the other replica's request, on its way
        held = await mine.reserve(counters, 100, 0)  # this replica's own
        assert isinstance(in_flight, BudgetHold) and isinstance(held, BudgetHold)
        valkey.kill()
        budgeting = Budgeting(Snapshot(), mine, ProxyMetrics())
        # 1,000 - 200 spent - 100 held here: 700 left for this replica.
        refused = budgeting._reserve_here(counters, 701, 0)
        assert isinstance(refused, BudgetRefusal) and (refused.spent, refused.held) == (200, 100)
        admitted = budgeting._reserve_here(counters, 650, 0)
        assert isinstance(admitted, BudgetHold) and not admitted.id  # admitted here alone
        # Its own hold settles while Valkey is away (the call fails): what it cost is spent, the rest
        # is room again; so is what the request admitted here did not cost.
        assert not await mine.settle(held, 30, 0)
        budgeting.settle(_call_holding(admitted), None)
        assert isinstance(budgeting._reserve_here(counters, 770, 0), BudgetHold)  # 200 + 30 spent
        assert isinstance(budgeting._reserve_here(counters, 1, 0), BudgetRefusal)
        await client.close()
    finally:
        valkey.stop()


def _call_holding(hold: BudgetHold) -> Any:
    """What ``Budgeting.settle`` reads of a call whose usage never came: its hold."""

    class _Call:
        budget_hold: BudgetHold | None = hold

    return _Call()


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_valkey_unreachable_budgets_follow_the_limits_rule(
    mode, snapshot, bus, nats_url, tmp_path, priced
):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    running = await start_in_process(
        proxy_settings(dead, limits_on_store_failure=mode), common_settings(nats_url, tmp_path)
    )
    try:
        team = "team-" + uuid.uuid4().hex[:8]
        await _budget(bus, "team", team, daily_nanos=1)  # nothing priced would fit
        value, _ = await snapshot.issue_token(team_id=team)
        await wait_token(running.base_url, value)
        await _known(running, "team", team)
        client = openai.AsyncOpenAI(base_url=running.v1, api_key=value, max_retries=0)
        if mode == "open":
            answer = await client.chat.completions.create(model=priced, messages=MESSAGES, max_tokens=2)
            assert answer.choices[0].message.content == "tok0 tok1"
        else:
            with pytest.raises(openai.InternalServerError) as refused:
                await client.chat.completions.create(model=priced, messages=MESSAGES, max_tokens=2)
            assert refused.value.status_code == 503
            assert "Budgets cannot be checked" in error_body(refused.value)["message"]
        await client.close()
    finally:
        await stop_in_process(running)


async def test_large_amounts_stay_exact_integers(valkey_url, valkey):
    # Millions of dollars in nano-dollars pass 1e14, where Lua would print numbers as "1e+15".
    scope_id = "org-" + uuid.uuid4().hex[:8]
    rule = BudgetRule(scope="org", scope_id=scope_id, monthly_nanos=10_000_000 * 10**9 + 7)
    counters = budget_counters([rule], datetime.now(UTC))
    store = BudgetStore(Redis.from_url(valkey_url))
    held = await store.reserve(counters, 1_234_567_890_123_457, 123_456_789_012)
    assert isinstance(held, BudgetHold)
    assert held.counted == (1_234_567_890_123_457, 123_456_789_012)
    await store.settle(held, 1_234_567_890_123_451, 123_456_789_011)
    again = await store.reserve(counters, 1_000_000_000_000_001, 1)
    assert isinstance(again, BudgetHold)
    assert again.counted == (2_234_567_890_123_452, 123_456_789_012)
    counter = await _counter(valkey, "org", scope_id, "month")
    assert counter == {
        "sn": 1_234_567_890_123_451,
        "st": 123_456_789_011,
        "hn": 1_000_000_000_000_001,
        "ht": 1,
    }


async def test_budgets_and_rate_limits_together(proxy, snapshot, bus, priced, valkey):
    from aqueduct_libs.snapshot import Limits

    # The reservation travels with the limits' check: a refusal by either leaves nothing held.
    team = "team-" + uuid.uuid4().hex[:8]
    await _budget(bus, "team", team, daily_nanos=2_500_000)  # two requests of $0.001 fit, not three
    value, grant = await snapshot.issue_token(
        team_id=team, limits=Limits(requests_per_minute=3, output_tokens_per_minute=10_000)
    )
    await wait_token(proxy.base_url, value)
    await _known(proxy, "team", team)
    client = openai.AsyncOpenAI(base_url=proxy.v1, api_key=value, max_retries=0)
    for _ in range(2):
        await client.chat.completions.create(model=priced, messages=MESSAGES, max_tokens=500)
    with pytest.raises(openai.RateLimitError) as budget:
        await client.chat.completions.create(model=priced, messages=MESSAGES, max_tokens=500)
    assert error_body(budget.value)["code"] == "insufficient_quota"
    with pytest.raises(openai.RateLimitError) as limit:  # three requests this minute: the limit now
        await client.chat.completions.create(model=priced, messages=MESSAGES, max_tokens=1)
    assert error_body(limit.value)["code"] == "rate_limit_exceeded"
    events = await usage_events(bus, grant.token_id, 2)
    assert (await _settled(valkey, "team", team))["sn"] == sum(_cost(e) for e in events)
    # The output tokens the refused request had reserved were given back to the per-minute limit.
    raw = await valkey.hget(f"aq:rl:{{{grant.token_id}}}:t:otpm", "t")
    assert int(raw) == sum(e.output_tokens for e in events) == 1000
    await client.close()


async def _team_budget_on_the_fast_client(
    valkey_url: str, daily_nanos: int
) -> tuple[str, tuple[BudgetCounter, ...], RespClient]:
    """A new team's daily budget counters, and the proxy's own Valkey client, connected."""
    scope_id = "team-" + uuid.uuid4().hex[:8]
    counters = budget_counters(
        [BudgetRule(scope="team", scope_id=scope_id, daily_nanos=daily_nanos)], datetime.now(UTC)
    )
    client = RespClient(valkey_url)
    await client.execute("PING")
    return scope_id, counters, client


async def test_one_turns_reservations_and_settlements_are_one_exact_call(valkey_url, valkey):
    # What a busy process reserves in one turn of its event loop goes to Valkey as one script call, and
    # stays exact: of 40 requests of 100 on a budget of 1,000, exactly 10 are admitted, in order.
    scope_id, counters, client = await _team_budget_on_the_fast_client(valkey_url, 1_000)
    store = BudgetStore(client, settle_within=60)  # settlements wait for the next call, however long
    await store.settle(BudgetHold("none", counters, 0, 0), 0, 0)  # Valkey loads the script
    before = (await valkey.info("commandstats"))["cmdstat_evalsha"]["calls"]

    answers = await asyncio.gather(*(store.reserve(counters, 100, 1) for _ in range(40)))
    held = [a for a in answers if isinstance(a, BudgetHold)]
    assert len(held) == 10 and all(isinstance(a, BudgetHold) for a in answers[:10])
    assert not any(isinstance(a, BudgetHold) for a in answers[10:])
    assert held[-1].counted == (1_000, 10)
    assert (await valkey.info("commandstats"))["cmdstat_evalsha"]["calls"] == before + 1

    for hold in held:
        store.settle_nowait(hold, 30, 1)  # nothing sent yet: they wait for the next call ...
    await asyncio.sleep(0.1)
    assert (await _counter(valkey, "team", scope_id))["hn"] == 1_000
    again = await store.reserve(counters, 700, 1)  # ... and go first in it: 300 spent, 700 more fit
    assert isinstance(again, BudgetHold) and again.counted == (1_000, 11)
    assert await _counter(valkey, "team", scope_id) == {"sn": 300, "st": 10, "hn": 700, "ht": 1}
    await store.settle(again, 0, 0)
    assert not await valkey.hexists(HOLDS_KEY, again.id)
    await client.close()


async def test_settlements_of_one_call_with_a_hold_expired_meanwhile_charge_exactly(valkey_url, valkey):
    # A call settles its holds together when all are still there; one of them expired (and released by
    # another process's admission) makes it settle them one by one: each charges its real cost, and only
    # the holds still there are taken back.
    scope_id, counters, client = await _team_budget_on_the_fast_client(valkey_url, 10_000)
    short = BudgetStore(client, hold_seconds=1, settle_within=60)
    expired = await short.reserve(counters, 800, 10)
    assert isinstance(expired, BudgetHold)
    await asyncio.sleep(2.2)
    other = BudgetStore(Redis.from_url(valkey_url), hold_seconds=60)
    releaser = await other.reserve(counters, 100, 1)  # releases the expired hold on its way
    assert isinstance(releaser, BudgetHold) and releaser.counted == (100, 1)
    kept = await short.reserve(counters, 500, 5)
    assert isinstance(kept, BudgetHold)
    short.settle_nowait(expired, 300, 3)
    short.settle_nowait(kept, 200, 2)
    after = await short.reserve(counters, 1_000, 1)  # the settlements go first in its call
    assert isinstance(after, BudgetHold) and after.counted == (300 + 200 + 100 + 1_000, 3 + 2 + 1 + 1)
    assert await _counter(valkey, "team", scope_id) == {"sn": 500, "st": 5, "hn": 1_100, "ht": 2}
    await other.settle(releaser, 0, 0)
    await short.settle(after, 0, 0)
    assert await _counter(valkey, "team", scope_id) == {"sn": 500, "st": 5, "hn": 0, "ht": 0}
    await client.close()
