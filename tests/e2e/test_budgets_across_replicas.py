"""A $0.05 daily budget held exactly by three proxy replicas on one Valkey, under 30 concurrent clients of
the openai SDK; then Valkey killed mid-run: the documented behaviour (budgets fail open like the rate
limits: each replica goes on checking against what Valkey last told it plus what it admitted since, and
accounting's quota decision stops the spend on all of them), and the counters rebuilt from ClickHouse
within 10 s of Valkey's return.

Real engines: NATS, Valkey, chDB (accounting), the proxy and accounting as their own processes; the
snapshot entries are written into the auth snapshot the way the directory's projection writes them.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import openai
import orjson
import pytest
from nats.js import api as js_api
from redis.asyncio import Redis

from aqueduct_cli.embedded import EmbeddedNats, EmbeddedValkey, free_port, wait_for_port
from aqueduct_libs import names
from aqueduct_libs.budgets import counter_key, periods_at
from aqueduct_libs.bus import ensure_topology
from aqueduct_libs.pricing import Price, TokenClasses
from aqueduct_libs.snapshot import BudgetRule, EndpointRoute, ModelRoute, TokenGrant
from aqueduct_libs.tokens import generate_token, hash_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey, pytest.mark.chdb, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "budget-e2e-secret-key-0123456789abcdef"
BUDGET = 50_000_000  # $0.05
PRICE = Price(1_000, 10_000)  # $1 per million input tokens, $10 per million output tokens
MESSAGES = [{"role": "user", "content": "one two three"}]
CAPS = (40, 80, 120, 200)
# The most one request may reserve: input counted by the tokenizer plus the chat overhead, the largest cap.
WORST = PRICE.cost(TokenClasses(3 + 3 + 4, max(CAPS)))


def _spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


class Deployment:
    def __init__(self, folder: Path, upstream_url: str) -> None:
        self.folder = folder
        self.upstream_url = upstream_url
        self.nats = EmbeddedNats(folder / "nats").start()
        self.valkey_port = free_port()
        self.valkey = EmbeddedValkey(folder / "valkey-1", port=self.valkey_port).start()
        self.processes: list[subprocess.Popen] = []
        self.proxies: list[str] = []
        common = {
            "AQUEDUCT_DEV_MODE": "true",
            "AQUEDUCT_NATS_URL": self.nats.url,
            "AQUEDUCT_SECRET_KEY": SECRET,
            "AQUEDUCT_LOG_LEVEL": "WARNING",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        self.common = common

    def start_services(self) -> None:
        accounting_port = free_port()
        self.accounting = f"http://127.0.0.1:{accounting_port}"
        self.processes.append(
            _spawn(
                "aqueduct_accounting",
                {
                    **self.common,
                    "AQUEDUCT_DATA_DIR": str(self.folder / "accounting"),
                    "AQUEDUCT_ACCOUNTING_PORT": str(accounting_port),
                    "AQUEDUCT_ACCOUNTING_REDIS_URL": self.valkey.url,
                    "AQUEDUCT_ACCOUNTING_BUDGET_CHECK_SECONDS": "0.5",
                },
                self.folder / "accounting.log",
            )
        )
        for i in range(3):
            port = free_port()
            self.processes.append(
                _spawn(
                    "aqueduct_proxy",
                    {
                        **self.common,
                        "AQUEDUCT_DATA_DIR": str(self.folder / f"proxy-{i}"),
                        "AQUEDUCT_PROXY_PORT": str(port),
                        "AQUEDUCT_PROXY_REDIS_URL": self.valkey.url,
                    },
                    self.folder / f"proxy-{i}.log",
                )
            )
            self.proxies.append(f"http://127.0.0.1:{port}")
        for base in self.proxies:
            wait_for_port("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=60)
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{self.accounting}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError((self.folder / "accounting.log").read_text()[-3000:])
            time.sleep(0.2)

    def restart_valkey_empty(self) -> None:
        """Valkey comes back on its address without its data (a new machine, a lost volume)."""
        self.valkey = EmbeddedValkey(self.folder / "valkey-2", port=self.valkey_port).start()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.valkey.stop()
        self.nats.stop()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, upstream_url: str) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path_factory.mktemp("budgets"), upstream_url)
    try:
        asyncio.run(_catalog(deployment))
        deployment.start_services()
        yield deployment
    finally:
        deployment.stop()


async def _kv(deployment: Deployment):
    nc = await nats.connect(deployment.nats.url)
    js = nc.jetstream()
    await ensure_topology(js)
    return nc, await js.key_value(names.AUTH_SNAPSHOT_BUCKET)


async def _catalog(deployment: Deployment) -> None:
    nc, kv = await _kv(deployment)
    endpoint = EndpointRoute(slug="local", url=deployment.upstream_url)
    model = ModelRoute(
        name="budgeted",
        endpoint="local",
        upstream_model="fake",
        input_price_nanos_per_token=int(PRICE.input_nanos_per_token),
        output_price_nanos_per_token=int(PRICE.output_nanos_per_token),
    )
    await kv.put(names.snapshot_endpoint_key("local"), endpoint.model_dump_json().encode())
    await kv.put(names.snapshot_model_key("budgeted"), model.model_dump_json().encode())
    await nc.close()


async def _team_with_budget(deployment: Deployment) -> tuple[str, str]:
    """A team with a $0.05 daily budget, and a token of one of its members."""
    team = "team-" + uuid.uuid4().hex[:8]
    value = generate_token()
    grant = TokenGrant(
        token_id="tok-" + uuid.uuid4().hex[:8],
        token_hash=hash_token(value, SECRET.encode()),
        name="budget test",
        user_id="user-" + team,
        team_id=team,
        org_id="org-budgets",
    )
    nc, kv = await _kv(deployment)
    rule = BudgetRule(scope="team", scope_id=team, daily_nanos=BUDGET)
    await kv.put(names.snapshot_budget_key("team", team), rule.model_dump_json().encode())
    await kv.put(names.snapshot_token_key(grant.token_hash), grant.model_dump_json().encode())
    await nc.close()
    async with httpx.AsyncClient() as client:  # every replica knows the token and its budget
        for base in deployment.proxies:
            for _ in range(200):
                r = await client.post(
                    f"{base}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {value}"},
                    json={"model": "nope", "messages": MESSAGES},
                )
                if r.status_code == 404:
                    break
                await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the budget entry follows the token in the same watch
    return team, value


class Run:
    def __init__(self) -> None:
        self.served: list[int] = []  # the real cost of each answer
        self.refused: list[str] = []
        self.failed: list[str] = []


async def _client_loop(client: openai.AsyncOpenAI, run: Run, stop: asyncio.Event, keep_going: bool) -> None:
    rng = random.Random()
    while not stop.is_set():
        try:
            answer = await client.chat.completions.create(
                model="budgeted", messages=MESSAGES, max_tokens=rng.choice(CAPS)
            )
        except openai.RateLimitError as exc:
            run.refused.append(orjson.loads(exc.response.content)["error"]["message"])
            if not keep_going:
                return
            await asyncio.sleep(0.1)
            continue
        except openai.APIError as exc:
            run.failed.append(repr(exc))
            await asyncio.sleep(0.1)
            continue
        usage = answer.usage
        assert usage is not None
        run.served.append(PRICE.cost(TokenClasses(usage.prompt_tokens, usage.completion_tokens)))


def _clients(deployment: Deployment, value: str, count: int) -> list[openai.AsyncOpenAI]:
    bases = itertools.cycle(deployment.proxies)
    return [
        openai.AsyncOpenAI(base_url=next(bases) + "/v1", api_key=value, max_retries=0, timeout=30)
        for _ in range(count)
    ]


async def _usage_cost(deployment: Deployment, team: str) -> int:
    """The cost of every usage event of the team on the bus: what accounting stores in ClickHouse."""
    nc = await nats.connect(deployment.nats.url)
    js = nc.jetstream()
    sub = await js.subscribe(
        names.USAGE_SUBJECT,
        ordered_consumer=True,
        config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
    )
    total = 0
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                break
            document = orjson.loads(msg.data)
            for event in document if isinstance(document, list) else [document]:
                if event.get("team_id") == team:
                    total += PRICE.cost(
                        TokenClasses(event["input_tokens"], event["output_tokens"], event["cached_tokens"])
                    )
    finally:
        await sub.unsubscribe()
        await nc.close()
    return total


async def _until(condition: Callable[[], bool], within: float, failure: str) -> None:
    for _ in range(int(within / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(failure)


async def test_thirty_clients_on_three_replicas_never_exceed_the_budget(deployment: Deployment) -> None:
    day = periods_at(datetime.now(UTC))[0]
    team, value = await _team_with_budget(deployment)
    run, stop = Run(), asyncio.Event()
    clients = _clients(deployment, value, 30)
    await asyncio.wait_for(asyncio.gather(*(_client_loop(c, run, stop, False) for c in clients)), 120)
    # Every client was refused once. Now nothing is in flight: one more client takes what is left.
    await asyncio.wait_for(_client_loop(clients[0], run, stop, False), 60)
    for client in clients:
        await client.close()

    spent = sum(run.served)
    assert not run.failed, run.failed[:3]
    assert spent <= BUDGET, f"served ${spent / 1e9:.6f} of a ${BUDGET / 1e9} budget"
    assert spent >= BUDGET - WORST, f"only ${spent / 1e9:.6f} of ${BUDGET / 1e9} was usable"
    assert len(run.refused) == 31
    assert all("team daily budget of $0.05" in message for message in run.refused)
    # The counter holds exactly what was served, and so does what accounting stores.
    valkey = Redis.from_url(deployment.valkey.url)
    if periods_at(datetime.now(UTC))[0] != day:  # the requests' day's counter is not today's any more
        pytest.skip("the test ran across midnight UTC")
    key = counter_key("team", team, day)
    assert [int(v or 0) for v in await valkey.hmget(key, "sn", "hn")] == [spent, 0]
    await valkey.aclose()
    assert await _usage_cost(deployment, team) == spent


async def test_valkey_killed_mid_run_then_counters_rebuilt_from_clickhouse(deployment: Deployment) -> None:
    day = periods_at(datetime.now(UTC))[0]
    team, value = await _team_with_budget(deployment)
    run, stop = Run(), asyncio.Event()
    clients = _clients(deployment, value, 30)
    tasks = [asyncio.create_task(_client_loop(c, run, stop, True)) for c in clients]
    await _until(lambda: sum(run.served) >= BUDGET // 3, 60, "a third of the budget was never spent")
    deployment.valkey.kill()
    served_before = len(run.served)
    await asyncio.sleep(1.0)
    # Open, like the rate limits: requests are still served without a reservation ...
    await _until(lambda: len(run.served) > served_before + 5, 30, "nothing was served with Valkey down")
    # ... until accounting's quota decision (from ClickHouse) refuses the used-up budget.
    await _until(
        lambda: sum(run.served) >= BUDGET and bool(run.refused) and "is used up" in run.refused[-1],
        30,
        "the used-up budget was never refused while Valkey was down",
    )
    stop.set()
    await asyncio.gather(*tasks)
    for client in clients:
        await client.close()
    overspend = sum(run.served) - BUDGET
    assert not run.failed, run.failed[:3]
    # Each replica alone spends at most what was left when Valkey went away.
    assert overspend <= 2 * (BUDGET - BUDGET // 3) + 3 * WORST

    deployment.restart_valkey_empty()
    returned = time.monotonic()
    valkey = Redis.from_url(deployment.valkey.url)
    if periods_at(datetime.now(UTC))[0] != day:  # the requests' day's counter is not today's any more
        pytest.skip("the test ran across midnight UTC")
    key = counter_key("team", team, day)
    stored = await _usage_cost(deployment, team)
    assert stored == sum(run.served)
    for _ in range(200):
        if int((await valkey.hget(key, "sn")) or 0) == stored:
            break
        await asyncio.sleep(0.05)
    assert time.monotonic() - returned < 10, "the counters were not rebuilt within 10 s"
    assert int((await valkey.hget(key, "sn")) or 0) == stored
    await valkey.aclose()
    # With the counter back, admission refuses again on every replica (not only the quota decision).
    client = openai.AsyncOpenAI(base_url=deployment.proxies[1] + "/v1", api_key=value, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="budgeted", messages=MESSAGES, max_tokens=40)
    await client.close()
    print(f"overspend while Valkey was down: ${overspend / 1e9:.4f}")
