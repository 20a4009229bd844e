"""The usage spool: files left by a process that crashed mid-delivery are taken over and delivered."""

from __future__ import annotations

import asyncio
import uuid

import nats
import orjson
import pytest
from nats.js import api as js_api

from aqueduct_libs import names
from aqueduct_libs.bus import ensure_topology
from aqueduct_proxy.adapters.publisher import UsagePublisher
from conftest import started_broker, usage_event, usage_events

pytestmark = [pytest.mark.nats]


async def test_spool_claimed_by_a_dead_process_is_delivered_once(nats_url, tmp_path):
    token_id = "tok-spool-" + uuid.uuid4().hex[:8]
    events = [usage_event(token_id, i) for i in range(3)]
    spool = tmp_path / "proxy-spool"
    spool.mkdir()
    lines = [e.event_id.encode() + b"\t" + e.model_dump_json().encode() for e in events]
    # Claimed by a process id that does not exist (it crashed before its events were acknowledged).
    (spool / "usage-1-deadbeef.claimed-999999999").write_bytes(b"\n".join(lines) + b"\n")
    (spool / "usage-1-fresh.jsonl").write_bytes(lines[0] + b"\n")  # one event spooled twice

    broker = await started_broker(nats_url)
    nc = broker.connection
    js = nc.jetstream()
    await ensure_topology(js)
    publisher = UsagePublisher(broker, spool)
    await publisher.start()
    delivered = await usage_events(js, token_id, 3)
    for _ in range(50):
        if not any(spool.iterdir()):
            break
        await asyncio.sleep(0.05)
    await publisher.stop()
    await nc.close()

    assert sorted(e.output_tokens for e in delivered) == [0, 1, 2]  # JetStream de-duplicated the repeat
    assert not any(spool.iterdir())


async def test_events_travel_grouped_and_each_arrives_once(nats_url, tmp_path):
    """250 events gathered while the publisher was not running go as 3 messages (100, 100, 50 events),
    each a JSON array; every event arrives exactly once."""
    token_id = "tok-group-" + uuid.uuid4().hex[:8]
    events = [usage_event(token_id, i) for i in range(250)]
    broker = await started_broker(nats_url)
    nc = broker.connection
    js = nc.jetstream()
    await ensure_topology(js)
    publisher = UsagePublisher(broker, tmp_path / "spool", events_per_message=100)
    for event in events:
        publisher.record(event)
    await publisher.start()
    delivered = await usage_events(js, token_id, 250)
    await publisher.stop()

    sub = await js.subscribe(
        names.USAGE_SUBJECT,
        ordered_consumer=True,
        config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
    )
    sizes = []
    while True:
        try:
            msg = await sub.next_msg(timeout=0.5)
        except nats.errors.TimeoutError:
            break
        if token_id.encode() in msg.data:
            document = orjson.loads(msg.data)
            assert isinstance(document, list)
            sizes.append(len(document))
            assert msg.headers["Nats-Msg-Id"].startswith("b-")
    await sub.unsubscribe()
    await nc.close()

    assert sizes == [100, 100, 50]
    assert sorted(e.output_tokens for e in delivered) == list(range(250))
    assert publisher.published == 250


async def test_a_steady_stream_goes_out_one_message_per_linger(nats_url, tmp_path):
    """Not one small message per acknowledgement round trip: rounds at most ``linger`` apart."""
    token_id = "tok-pace-" + uuid.uuid4().hex[:8]
    broker = await started_broker(nats_url)
    nc = broker.connection
    js = nc.jetstream()
    await ensure_topology(js)
    publisher = UsagePublisher(broker, tmp_path / "spool", linger=0.05)
    await publisher.start()
    started = asyncio.get_running_loop().time()
    for i in range(500):  # an event every 2 ms for about a second
        publisher.record(usage_event(token_id, i))
        await asyncio.sleep(max(0.0, started + (i + 1) * 0.002 - asyncio.get_running_loop().time()))
    elapsed = asyncio.get_running_loop().time() - started
    delivered = await usage_events(js, token_id, 500)
    await publisher.stop()

    sub = await js.subscribe(
        names.USAGE_SUBJECT,
        ordered_consumer=True,
        config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
    )
    messages = 0
    while True:
        try:
            msg = await sub.next_msg(timeout=0.5)
        except nats.errors.TimeoutError:
            break
        messages += token_id.encode() in msg.data
    await sub.unsubscribe()
    await nc.close()

    assert sorted(e.output_tokens for e in delivered) == list(range(500))
    # A loaded machine stretches the second; the messages follow its length, not the event rate.
    assert messages <= elapsed / 0.05 + 3, (messages, elapsed)
