"""No bad event and no lost table stops usage, against the product as ``aqueduct up`` runs it.

An upstream reporting an absurd ``prompt_tokens`` is counted within bounds (never a wrapped, negative
cost); events out of bounds published on the bus go to the dead-letter stream, which the CLI lists, and
the next good event is stored within a second; the usage table and the directory mirror dropped are
recreated and refilled after a restart, and the product serves.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import nats
import openai
import pytest

from aqueduct_accounting.adapters.clickhouse import ClickHouse, embedded_dsn
from aqueduct_libs import bounds, names
from aqueduct_libs.events import UsageRecorded
from tests.support.stack import Stack, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.nats, pytest.mark.chdb]


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory, upstream) -> Iterator[Stack]:
    """A product of its own: these tests restart it and drop its tables."""
    workdir = tmp_path_factory.mktemp("robust")
    running = Stack(workdir, write_config(workdir / "aqueduct.yaml", upstream.url)).start()
    running.login_admin()
    yield running
    running.stop()


def _session(stack: Stack) -> str:
    answer = httpx.post(
        f"{stack.urls['auth']}/auth/token",
        json={"username": stack.admin_username, "password": stack.admin_password},
        timeout=30,
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def _sql(stack: Stack, token: str, query: str) -> list[list[Any]]:
    answer = httpx.post(
        f"{stack.urls['accounting']}/api/sql",
        json={"query": query},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return answer.json()["rows"] if answer.status_code == 200 else []


def _eventually(check, within: float, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _chat(stack: Stack, token: str) -> None:
    client = openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=token, max_retries=0)
    answer = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "one two three"}], max_tokens=5
    )
    assert answer.choices[0].message.content


async def _publish_as_proxy(stack: Stack, payloads: list[bytes]) -> float:
    """The way a (faulty) proxy would: as the proxy's NATS user, to the usage subject. Returns when
    (monotonic) the last one was published."""
    runtime = json.loads((stack.data_dir / "runtime.json").read_text())
    host_port = re.fullmatch(r"nats://(.+)", runtime["nats_url"]).group(1)  # type: ignore[union-attr]
    password = json.loads((stack.data_dir / "nats" / "users.json").read_text())["proxy"]
    nc = await nats.connect(f"nats://proxy:{password}@{host_port}", inbox_prefix=names.inbox_prefix("proxy"))
    try:
        js = nc.jetstream()
        for payload in payloads[:-1]:
            await js.publish(names.USAGE_SUBJECT, payload)
        last = time.monotonic()
        await js.publish(names.USAGE_SUBJECT, payloads[-1])
        return last
    finally:
        await nc.close()


def _event(event_id: str, **fields: Any) -> dict[str, Any]:
    event = UsageRecorded(
        event_id=event_id,
        token_id="tok-robust",
        user_id="user-robust",
        org_id="org-robust",
        endpoint="fake",
        model="fake-model",
        route="/v1/chat/completions",
        status_code=200,
        input_tokens=3,
        output_tokens=5,
    )
    return {**json.loads(event.model_dump_json()), **fields}


BAD = {
    "robust-overflow": {"input_tokens": 2**63 - 1},
    "robust-1969": {"occurred_at": "1969-07-20T20:17:40+00:00"},
    "robust-2300": {"occurred_at": "2299-12-31T00:00:00+00:00"},
    "robust-status": {"status_code": 70000},
    "robust-type": {"output_tokens": "many"},
}


def test_an_absurd_upstream_count_is_counted_within_bounds(product: Stack, upstream) -> None:
    token = product.cli("tokens", "create", "--name", "absurd", "-q").stdout.strip()
    httpx.post(f"{upstream.base}/_usage", content=b'{"prompt_tokens": 1' + b"0" * 30 + b', "times": 1}')
    _chat(product, token)
    session = _session(product)
    query = f"SELECT cost_nanos FROM usage_events WHERE input_tokens = {bounds.MAX_TOKENS}"
    assert _eventually(lambda: len(_sql(product, session, query)) == 1, within=30)
    [[cost_nanos]] = _sql(product, session, query)
    # $1 per million input tokens, $2 per million output tokens (write_config): never wrapped negative.
    assert int(cost_nanos) == bounds.MAX_TOKENS * 1000 + 5 * 2000


def test_bad_events_go_to_the_dead_letters_and_the_next_good_one_is_stored_within_a_second(
    product: Stack,
) -> None:
    session = _session(product)
    payloads = [json.dumps(_event(k, **v)).encode() for k, v in BAD.items()]
    published = asyncio.run(
        _publish_as_proxy(product, [*payloads, json.dumps(_event("robust-good")).encode()])
    )
    good = "SELECT count() FROM usage_events WHERE event_id = 'robust-good'"
    assert _eventually(lambda: _sql(product, session, good) == [[1]], within=10, interval=0.02)
    assert time.monotonic() - published < 1.0, "the good event behind the bad ones is stored within a second"

    def listed() -> list[dict[str, Any]]:
        result = product.cli("dead-letters", "list", "--format", "json")
        return list(json.loads(result.stdout))

    assert _eventually(lambda: len(listed()) >= len(BAD), within=10)
    letters = {json.loads(x["payload"])["event_id"]: x for x in listed()}
    assert set(BAD) <= set(letters)
    for event_id, fields in BAD.items():
        assert next(iter(fields)) in letters[event_id]["reason"], letters[event_id]
    stored = _sql(product, session, "SELECT count() FROM usage_events WHERE startsWith(event_id, 'robust-')")
    assert stored == [[1]], "only the good event is stored"

    table = product.cli("dead-letters", "list").stdout
    assert "status_code 70000" in table and f"{len(letters)} dead letter(s) in all" in table
    shown = json.loads(product.cli("dead-letters", "show", str(letters["robust-1969"]["id"])).stdout)
    assert json.loads(shown["payload"])["occurred_at"].startswith("1969-07-20")
    assert shown["source_stream"] == names.USAGE_STREAM and "occurred_at" in shown["reason"]
    refused = product.cli("dead-letters", "redrive", str(letters["robust-status"]["id"]), check=False)
    assert refused.returncode != 0 and "status_code" in refused.stderr + refused.stdout
    everything = product.cli("dead-letters", "redrive", "--all", check=False)
    assert everything.returncode == 1 and "0 dead letter(s) re-driven" in everything.stdout
    assert "still failing" in everything.stdout
    metrics = httpx.get(f"{product.urls['accounting']}/metrics", timeout=10).text
    assert re.search(rf"^aqueduct_accounting_dead_letters_total {len(letters)}\.0$", metrics, re.M)
    assert httpx.get(f"{product.urls['accounting']}/readyz", timeout=10).status_code == 200


def test_dropped_usage_table_and_directory_mirror_are_rebuilt_after_a_restart(product: Stack) -> None:
    token = product.cli("tokens", "create", "--name", "before-the-loss", "-q").stdout.strip()
    _chat(product, token)
    session = _session(product)
    counts = (
        "SELECT (SELECT count() FROM usage_events), (SELECT count() FROM directory_events), "
        "(SELECT sum(requests) FROM usage_by_day)"
    )
    assert _eventually(lambda: (rows := _sql(product, session, counts)) and rows[0][0] == rows[0][2] > 0, 30)
    [[usage_before, directory_before, _]] = _sql(product, session, counts)
    letters_before = len(json.loads(product.cli("dead-letters", "list", "--format", "json").stdout))

    product.stop()
    engine = ClickHouse(embedded_dsn(product.data_dir / "chdb"))
    try:
        engine.execute("DROP TABLE usage_events")
        engine.execute("DROP TABLE directory_events")
    finally:
        engine.close()
    product.start()

    _chat(product, token)  # the product serves
    session = _session(product)
    expected = [[usage_before + 1, directory_before, usage_before + 1]]
    assert _eventually(lambda: _sql(product, session, counts) == expected, within=60), _sql(
        product, session, counts
    )
    letters_after = len(json.loads(product.cli("dead-letters", "list", "--format", "json").stdout))
    assert letters_after == letters_before, "a restart dead-letters nothing new"
    assert httpx.get(f"{product.urls['accounting']}/readyz", timeout=10).status_code == 200
