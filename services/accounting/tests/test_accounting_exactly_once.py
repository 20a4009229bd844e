"""Every usage event is counted exactly once: across a SIGKILL of the service, and across redelivery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from accounting_testing import AccountingProcess, SessionKeys, publish_usage, usage_event, wait_until

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs import names
from aqueduct_libs.bus import ensure_topology

pytestmark = [pytest.mark.nats, pytest.mark.chdb, pytest.mark.slow]

TOTAL = 10_000


def _count(service: AccountingProcess, token: str) -> int:
    try:
        answer = service.sql(token, "SELECT count() FROM usage_events")
    except Exception:
        return -1
    return int(answer.json()["rows"][0][0]) if answer.status_code == 200 else -1


async def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    bus = EmbeddedNats(tmp_path / "nats").start()
    nc = await nats.connect(bus.url)
    service = AccountingProcess(
        tmp_path / "service",
        bus.url,
        # Short ack wait: what the killed process had fetched but not acknowledged comes back quickly.
        {"AQUEDUCT_ACCOUNTING_ACK_WAIT_SECONDS": "2", "AQUEDUCT_ACCOUNTING_BATCH_SIZE": "500"},
    )
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        keys = SessionKeys()
        await keys.publish(js)
        admin = await keys.signed_in("admin-1", admin=True)
        events = [usage_event(i) for i in range(TOTAL)]
        service.start()

        async def steady_stream() -> None:
            # About 4,000 requests per second, the way a busy proxy publishes them.
            for start in range(0, TOTAL, 200):
                for event in events[start : start + 200]:
                    await js.publish(
                        names.USAGE_SUBJECT,
                        event.model_dump_json().encode(),
                        headers={"Nats-Msg-Id": event.event_id},
                    )
                await asyncio.sleep(0.05)

        publishing = asyncio.create_task(steady_stream())
        await wait_until(lambda: _count(service, admin) >= TOTAL // 4, within=60, interval=0.05)
        seen_before_kill = _count(service, admin)
        service.kill()
        assert 0 < seen_before_kill < TOTAL, "the kill must land mid-stream"
        await asyncio.sleep(0.5)
        service.start()
        await publishing

        await wait_until(lambda: _count(service, admin) >= TOTAL, within=90, interval=0.2)
        await asyncio.sleep(3)  # past the ack wait: any redelivery would now have landed

        answer = service.sql(
            admin,
            "SELECT count(), uniqExact(event_id), sum(input_tokens), sum(output_tokens) FROM usage_events",
        )
        rows, unique, input_sum, output_sum = answer.json()["rows"][0]
        assert (rows, unique) == (TOTAL, TOTAL)
        assert input_sum == sum(e.input_tokens for e in events)
        assert output_sum == sum(e.output_tokens for e in events)
        for table in ("usage_by_minute", "usage_by_hour", "usage_by_day"):
            rolled = service.sql(admin, f"SELECT sum(requests), sum(input_tokens) FROM {table}").json()[
                "rows"
            ]
            assert rolled == [[TOTAL, input_sum]], table
    finally:
        service.kill()
        await nc.close()
        bus.stop()


async def test_a_redelivered_or_republished_event_counts_once(
    js, accounting: AccountingProcess, admin_token: str, session_keys: SessionKeys
) -> None:
    event = usage_event(1, event_id="once-1", org_id="org-once")
    twin = usage_event(2, event_id="once-2", org_id="org-once")
    payloads = [event, event, twin]  # the same event twice in one batch
    for n, item in enumerate(payloads):
        # Different message ids get past JetStream's own de-duplication, as a retry after its window would.
        await js.publish(
            names.USAGE_SUBJECT, item.model_dump_json().encode(), headers={"Nats-Msg-Id": f"m{n}"}
        )
    await asyncio.sleep(1.5)
    # And again later, in a batch of its own, after the first copy is stored.
    await js.publish(names.USAGE_SUBJECT, event.model_dump_json().encode(), headers={"Nats-Msg-Id": "m9"})

    query = "SELECT event_id, count(), sum(input_tokens) FROM usage_events WHERE org_id = 'org-once' GROUP BY 1 ORDER BY 1"
    await wait_until(
        lambda: accounting.metrics().get("aqueduct_accounting_duplicate_events_total", 0) >= 2, within=20
    )

    answer = accounting.sql(admin_token, query)
    assert answer.json()["rows"] == [["once-1", 1, event.input_tokens], ["once-2", 1, twin.input_tokens]]
    assert accounting.metrics()["aqueduct_accounting_duplicate_events_total"] >= 2


async def test_an_unreadable_message_is_set_aside_and_the_stream_goes_on(
    js, accounting: AccountingProcess, admin_token: str
) -> None:
    for n, payload in enumerate([b"not json", b'{"event_id": "half"}', b'{"schema_version": 2}']):
        await js.publish(names.USAGE_SUBJECT, payload, headers={"Nats-Msg-Id": f"poison-{n}"})
    after = usage_event(3, event_id="after-poison", org_id="org-poison")
    await publish_usage(js, [after])

    def stored() -> bool:
        answer = accounting.sql(admin_token, "SELECT count() FROM usage_events WHERE org_id = 'org-poison'")
        return answer.json()["rows"] == [[1]]

    assert await wait_until(stored, within=10)
    assert accounting.metrics()["aqueduct_accounting_rejected_messages_total"] == 3
    forged = accounting.sql(admin_token, "SELECT count() FROM usage_events WHERE event_id = 'half'")
    assert forged.json()["rows"] == [[0]]


async def test_a_message_with_an_array_of_events_counts_each_once(
    js, accounting: AccountingProcess, admin_token: str
) -> None:
    events = [usage_event(i, event_id=f"arr-{i}", org_id="org-array") for i in range(5)]
    payload = b"[" + b",".join(e.model_dump_json().encode() for e in events) + b"]"
    await js.publish(names.USAGE_SUBJECT, payload, headers={"Nats-Msg-Id": "array-1"})
    await js.publish(names.USAGE_SUBJECT, payload, headers={"Nats-Msg-Id": "array-2"})  # a re-publish

    query = "SELECT count(), sum(input_tokens) FROM usage_events WHERE org_id = 'org-array'"
    assert await wait_until(lambda: accounting.sql(admin_token, query).json()["rows"][0][0] == 5, within=10)
    await asyncio.sleep(1.0)
    assert accounting.sql(admin_token, query).json()["rows"] == [[5, sum(e.input_tokens for e in events)]]
