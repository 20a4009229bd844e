"""Budget leases (real Valkey): far from its limits a set of counters' requests are admitted on a local
allowance, one ordinary hold in Valkey, with no call to Valkey per request; what they spent reaches the
counters' settled spend within the lease's interval and at drain, exactly; near a limit there is no lease;
a dead process's lease is released at its deadline; a renewal Valkey refuses ends the lease and still
charges what its requests spent."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import openai
import pytest
from redis.asyncio import Redis

from aqueduct_cli.embedded import EmbeddedValkey
from aqueduct_libs.budgets import DUE_KEY, counter_key, periods_at
from aqueduct_libs.pricing import Price, TokenClasses
from aqueduct_libs.snapshot import BudgetRule
from aqueduct_proxy.adapters.budget_leases import BudgetLeases
from aqueduct_proxy.adapters.budget_store import BudgetCounter, BudgetHold, BudgetStore
from aqueduct_proxy.adapters.resp import RespClient
from aqueduct_proxy.domain.budgets import budget_counters
from conftest import (
    common_settings,
    proxy_settings,
    start_in_process,
    stop_in_process,
    usage_events,
    wait_token,
)

pytestmark = [pytest.mark.nats, pytest.mark.valkey]

WORST = (1_000, 10)  # a request's worst case in these tests: nano-dollars, tokens


@pytest.fixture
async def valkey(valkey_url):
    client = Redis.from_url(valkey_url)
    yield client
    await client.aclose()


# Each test team's day counter key, as its counters were built here (a team made through the proxy:
# today's): a test running over midnight (UTC) reads the counter its requests counted against, not the
# next day's (empty).
_KEYS: dict[str, str] = {}


async def _counter(valkey, scope_id: str) -> dict[str, int]:
    key = _KEYS.get(scope_id) or counter_key("team", scope_id, periods_at(datetime.now(UTC))[0])
    raw = await valkey.hgetall(key)
    return {k.decode(): int(v) for k, v in raw.items()}


async def _calls(valkey) -> int:
    return (await valkey.info("commandstats"))["cmdstat_evalsha"]["calls"]


async def _leased_team(
    valkey_url: str, daily_nanos: int, **options: float
) -> tuple[str, tuple[BudgetCounter, ...], BudgetStore, BudgetLeases, RespClient]:
    scope_id = "team-" + uuid.uuid4().hex[:8]
    counters = budget_counters(
        [BudgetRule(scope="team", scope_id=scope_id, daily_nanos=daily_nanos)], datetime.now(UTC)
    )
    _KEYS[scope_id] = counters[0].key
    client = RespClient(valkey_url)
    await client.execute("PING")
    store = BudgetStore(client, hold_seconds=int(options.pop("hold_seconds", 900)))
    return scope_id, counters, store, BudgetLeases(store, **options), client  # type: ignore[arg-type]


async def _lease(store: BudgetStore, leases: BudgetLeases, counters: tuple[BudgetCounter, ...]) -> None:
    """The first requests go to Valkey on their own (nothing is known of the counters yet); the second
    asks for a lease, granted in the same call as its own reservation."""
    assert leases.admit(counters, *WORST) is None
    first = await store.reserve(counters, *WORST)
    assert leases.admit(counters, *WORST) is None
    second = await store.reserve(counters, *WORST)
    assert isinstance(first, BudgetHold) and isinstance(second, BudgetHold)
    for _ in range(10):
        await asyncio.sleep(0)  # the lease's answer, read with the reservation's
    await store.settle(first, 0, 0)
    await store.settle(second, 0, 0)


async def test_far_from_the_limit_requests_are_admitted_and_settled_without_valkey(valkey_url, valkey):
    scope_id, counters, store, leases, client = await _leased_team(valkey_url, 10**12, interval=0.1)
    await _lease(store, leases, counters)
    assert (await _counter(valkey, scope_id))["hn"] == 64 * WORST[0]  # the lease: 64 requests' worst case
    before = await _calls(valkey)

    held = [leases.admit(counters, *WORST) for _ in range(50)]
    assert all(h is not None and h.lease is not None for h in held)
    assert await _calls(valkey) == before  # not one call to Valkey
    for i, hold in enumerate(held):
        assert hold is not None and hold.lease is not None
        hold.lease.settle(hold.nanos, hold.tokens, 300 + i, 3)
    await asyncio.sleep(0.25)  # one interval or two: the lease settles what it spent, and renews
    spent = sum(300 + i for i in range(50))
    counter = await _counter(valkey, scope_id)
    assert (counter["sn"], counter["st"]) == (spent, 150)
    assert counter["hn"] == 64 * WORST[0]  # renewed: nothing in flight, the fresh allowance
    # One call: the lease's settlement, then its next reservation (nothing spent since: no other).
    assert await _calls(valkey) == before + 1

    await leases.drain()  # the process exits: the lease is settled and its allowance given back
    await store.drain()
    assert await _counter(valkey, scope_id) == {"sn": spent, "st": 150, "hn": 0, "ht": 0}
    assert not [m for m in await valkey.zrange(DUE_KEY, 0, -1) if m.startswith(store.hold_prefix.encode())]
    await client.close()


async def test_requests_in_flight_stay_held_across_renewals_and_the_lease_grows(valkey_url, valkey):
    scope_id, counters, store, leases, client = await _leased_team(valkey_url, 10**12, interval=0.05)
    await _lease(store, leases, counters)
    in_flight = [leases.admit(counters, *WORST) for _ in range(70)]  # 6 more than the lease has
    assert sum(h is not None for h in in_flight) == 64 and in_flight[-1] is None
    kept = [h for h in in_flight if h is not None]
    settled = kept[:10]
    for hold in settled:
        assert hold.lease is not None
        hold.lease.settle(*WORST, 500, 5)
    await asyncio.sleep(0.15)  # renewed: 54 in flight still held, plus a fresh allowance twice as large
    counter = await _counter(valkey, scope_id)
    assert (counter["sn"], counter["hn"]) == (5_000, 54 * WORST[0] + 128 * WORST[0])
    assert all(leases.admit(counters, *WORST) is not None for _ in range(128))
    for hold in kept[10:]:
        assert hold.lease is not None
        hold.lease.settle(*WORST, 0, 0)
    await leases.drain()
    await store.drain()
    counter = await _counter(valkey, scope_id)
    # The 128 last requests never settled (the process exits with them): their worst case stays held.
    assert (counter["sn"], counter["st"], counter["hn"], counter["ht"]) == (5_000, 50, 128_000, 1_280)
    await client.close()


async def test_no_lease_near_the_limit(valkey_url, valkey):
    # A lease of 64 requests needs room for 64,000 of them: a budget of 63,000 requests has none.
    scope_id, counters, store, leases, client = await _leased_team(
        valkey_url, 63_000 * WORST[0], interval=0.01
    )
    first = await store.reserve(counters, *WORST)
    assert isinstance(first, BudgetHold)
    for _ in range(5):
        assert leases.admit(counters, *WORST) is None
        await asyncio.sleep(0.02)
    assert (await _counter(valkey, scope_id))["hn"] == WORST[0]  # the request's own hold, no lease
    await store.settle(first, 0, 0)
    await client.close()


async def test_a_dead_process_lease_is_released_at_its_deadline(valkey_url, valkey):
    scope_id, counters, store, leases, client = await _leased_team(
        valkey_url, 10**12, hold_seconds=1, idle_seconds=60
    )
    await _lease(store, leases, counters)
    assert leases.admit(counters, *WORST) is not None  # ... and the process dies, lease and all
    assert (await _counter(valkey, scope_id))["hn"] == 64 * WORST[0]
    await client.close()
    await asyncio.sleep(2.2)
    other = BudgetStore(Redis.from_url(valkey_url))
    again = await other.reserve(counters, *WORST)  # releases the dead lease on its way
    assert isinstance(again, BudgetHold) and again.counted == (WORST[0], WORST[1])
    await other.settle(again, 0, 0)
    assert (await _counter(valkey, scope_id))["hn"] == 0


async def test_a_refused_renewal_ends_the_lease_and_still_charges_its_spend(valkey_url, valkey):
    scope_id, counters, store, leases, client = await _leased_team(valkey_url, 10**12, interval=0.05)
    await _lease(store, leases, counters)
    held = [leases.admit(counters, *WORST) for _ in range(3)]
    # Accounting raises the settled spend near the limit (ClickHouse knew of more): the renewal of the
    # lease (2 requests in flight plus an allowance) no longer fits.
    await valkey.hset(counters[0].key, "sn", 10**12 - 1_000)
    first = held[0]
    assert first is not None and first.lease is not None
    first.lease.settle(*WORST, 400, 4)
    await asyncio.sleep(0.2)
    assert leases.admit(counters, *WORST) is None  # no lease any more
    for hold in held[1:]:
        assert hold is not None and hold.lease is not None
        hold.lease.settle(*WORST, 700, 7)
    await asyncio.sleep(0.2)  # what they spent is charged with no hold to settle
    counter = await _counter(valkey, scope_id)
    assert (counter["sn"], counter["st"], counter["hn"], counter["ht"]) == (
        10**12 - 1_000 + 400 + 1_400,
        18,
        0,
        0,
    )
    await leases.drain()
    await store.drain()
    await client.close()


async def test_through_the_proxy_the_counters_are_exact(
    snapshot, bus, nats_url, valkey_url, valkey, tmp_path
):
    # A priced model, a team budget of $1,000 a day: its requests go on a lease; the settled spend is the
    # usage events' cost within the lease's interval, and nothing is held once the proxy drained.
    await snapshot.put_model(
        "leased-model",
        "local",
        "fake-priced",
        input_price_nanos_per_token=1_000,
        output_price_nanos_per_token=2_000,
    )
    from aqueduct_libs import names

    scope_id = "team-" + uuid.uuid4().hex[:8]
    kv = await bus.key_value(names.AUTH_SNAPSHOT_BUCKET)
    rule = BudgetRule(scope="team", scope_id=scope_id, daily_nanos=10**12)
    await kv.put(names.snapshot_budget_key("team", scope_id), rule.model_dump_json().encode())
    running = await start_in_process(proxy_settings(valkey_url), common_settings(nats_url, tmp_path))
    try:
        value, grant = await snapshot.issue_token(team_id=scope_id)
        await wait_token(running.base_url, value)
        for _ in range(200):
            if f"team.{scope_id}" in running.proxy.gateway.snapshot.budgets:
                break
            await asyncio.sleep(0.05)
        client = openai.AsyncOpenAI(base_url=running.v1, api_key=value, max_retries=0)
        messages = [{"role": "user", "content": "one two three"}]
        for _ in range(3):
            await client.chat.completions.create(model="leased-model", messages=messages, max_tokens=5)
        await asyncio.sleep(0.15)  # the lease, granted
        before = await _calls(valkey)
        await asyncio.gather(
            *(
                client.chat.completions.create(model="leased-model", messages=messages, max_tokens=5)
                for _ in range(40)
            )
        )
        assert await _calls(valkey) - before <= 5  # renewals, not one call per request
        events = await usage_events(bus, grant.token_id, 43)
        spent = sum(Price(1_000, 2_000).cost(TokenClasses(e.input_tokens, e.output_tokens)) for e in events)
        await asyncio.sleep(0.25)
        counter = await _counter(valkey, scope_id)
        assert counter["sn"] == spent and counter["hn"] > 0  # settled within the interval; the lease held
        await client.close()
    finally:
        await stop_in_process(running)
    assert await _counter(valkey, scope_id) == {
        "sn": spent,
        "st": sum(e.input_tokens + e.output_tokens for e in events),
        "hn": 0,
        "ht": 0,
    }


async def test_an_idle_lease_gives_its_allowance_back_and_makes_way_for_a_new_one(valkey_url, valkey):
    scope_id, counters, store, leases, client = await _leased_team(
        valkey_url, 10**12, interval=0.05, idle_seconds=0.2
    )
    await _lease(store, leases, counters)
    slow = leases.admit(counters, *WORST)  # a long stream, say
    assert slow is not None and slow.lease is not None
    await asyncio.sleep(0.4)  # idle: the lease ends, what the stream may cost stays held
    assert (await _counter(valkey, scope_id))["hn"] == WORST[0]
    assert leases.admit(counters, *WORST) is None  # asks for a new lease ...
    for _ in range(100):
        if (await _counter(valkey, scope_id))["hn"] == WORST[0] + 64 * WORST[0]:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
    fresh = leases.admit(counters, *WORST)  # ... which admits the next ones
    assert fresh is not None and fresh.lease is not None and fresh.lease is not slow.lease
    slow.lease.settle(*WORST, 600, 6)
    fresh.lease.settle(*WORST, 100, 1)
    await asyncio.sleep(0.12)
    counter = await _counter(valkey, scope_id)
    assert (counter["sn"], counter["st"], counter["hn"]) == (700, 7, 64 * WORST[0])
    await leases.drain()
    await store.drain()
    assert await _counter(valkey, scope_id) == {"sn": 700, "st": 7, "hn": 0, "ht": 0}
    await client.close()


async def test_valkey_gone_the_lease_ends_and_requests_take_the_fallback(tmp_path):
    valkey = EmbeddedValkey(tmp_path / "valkey").start()
    try:
        _, counters, store, leases, client = await _leased_team(valkey.url, 10**12, interval=0.05)
        await _lease(store, leases, counters)
        held = leases.admit(counters, *WORST)
        assert held is not None and held.lease is not None
        held.lease.settle(*WORST, 500, 5)
        valkey.kill()
        await asyncio.sleep(0.3)  # the lease's renewal fails: Valkey is down for this process
        assert store.down
        assert leases.admit(counters, *WORST) is None  # requests take the store's fallback
        assert store.reserve_nowait(counters, *WORST) is None
        await leases.drain()  # nothing to send while Valkey is away
        await client.close()
    finally:
        valkey.stop()


async def test_spending_a_budget_to_its_limit_the_lease_ends_and_every_request_that_fits_is_served(
    valkey_url, valkey
):
    # Small factors so that it takes a few hundred requests: a lease (8 requests' worst case at first)
    # while the room is at least 10 times it, none below 10 times 2 requests' worst case.
    budget = 240 * WORST[0]
    scope_id, counters, store, leases, client = await _leased_team(
        valkey_url, budget, interval=0.01, room_factor=10, first_requests=8, min_requests=2
    )
    served = leased = 0
    refused = False
    while not refused:
        holds: list[BudgetHold] = []
        for _ in range(4):
            hold = leases.admit(counters, *WORST)
            if hold is not None:
                leased += 1
            else:
                answer = await store.reserve(counters, *WORST)
                if not isinstance(answer, BudgetHold):
                    refused = True
                    break
                hold = answer
            holds.append(hold)
        await asyncio.sleep(0.003)
        for hold in holds:  # each costs its worst case
            if hold.lease is not None:
                hold.lease.settle(*WORST, *WORST)
            else:
                store.settle_nowait(hold, *WORST)
            served += 1
    await leases.drain()
    await store.drain()
    assert leased > 100 and served == 240  # all that fit: the last ones checked in Valkey one by one
    assert await _counter(valkey, scope_id) == {"sn": budget, "st": 240 * WORST[1], "hn": 0, "ht": 0}
    await client.close()
