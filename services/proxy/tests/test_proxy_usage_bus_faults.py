"""The usage publisher against a bus that dies in the middle of a batch, as the assembled product runs it:
per-service NATS users (the proxy reads only its own inbox, ``_INBOX_proxy``), a real nats-server killed
with SIGKILL while a batch's messages are in flight, then started again on the same store.

Messages JetStream stored before the kill lost their acknowledgement with the connection: the publisher
must count them as not delivered, send them again with the same ``Nats-Msg-Id`` and JetStream must drop
the copies. Nothing lost, nothing stored or counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import nats
import pytest
from nats.js import api as js_api

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_cli.nats_users import SERVICE_USERS
from aqueduct_libs import names
from aqueduct_libs.bus import ensure_topology
from aqueduct_proxy.adapters.publisher import UsagePublisher
from conftest import read_usage_message, started_broker, usage_event

pytestmark = [pytest.mark.nats]

EVENTS = 3000


async def _stored(url: str) -> tuple[int, list[str], list[str]]:
    """The usage stream as accounting reads it: its message count, every event id, every Nats-Msg-Id."""
    nc = await nats.connect(url, inbox_prefix=names.inbox_prefix("accounting"))
    try:
        js = nc.jetstream()
        count = (await js.stream_info(names.USAGE_STREAM)).state.messages
        ids, message_ids = [], []
        for seq in range(1, count + 1):
            raw = await js.get_msg(names.USAGE_STREAM, seq)
            ids += [e.event_id for e in read_usage_message(raw.data or b"")]
            message_ids.append((raw.headers or {}).get("Nats-Msg-Id", ""))
        return count, ids, message_ids
    finally:
        await nc.close()


async def test_the_bus_killed_mid_batch_loses_no_event_and_stores_none_twice(tmp_path, caplog):
    server = EmbeddedNats(tmp_path / "nats", users={s: secrets.token_hex(12) for s in SERVICE_USERS}).start()
    try:
        directory = await nats.connect(
            server.url_for("directory"), inbox_prefix=names.inbox_prefix("directory")
        )
        await ensure_topology(directory.jetstream())
        await directory.close()

        broker = await started_broker(server.url_for("proxy"))
        spool = tmp_path / "spool"
        # One event to a message and the whole backlog in one batch: thousands of acknowledgements in
        # flight when the server dies.
        publisher = UsagePublisher(
            broker, spool, events_per_message=1, batch_size=EVENTS, publish_timeout=1.0, linger=0.0
        )
        events = [usage_event("tok-bus-fault", i) for i in range(EVENTS)]
        for event in events:
            publisher.record(event)
        caplog.set_level(logging.WARNING, logger="aqueduct_proxy.adapters.publisher")
        await publisher.start()
        await asyncio.sleep(0.003)  # the batch is on the wire
        server.kill()
        at_kill = publisher.published
        await asyncio.sleep(0.5)
        server.start()

        for _ in range(300):
            if publisher.published >= EVENTS and not publisher.buffered:
                break
            await asyncio.sleep(0.1)
        await publisher.stop()
        # A connection still reconnecting (the restarted server dropped a first attempt) cannot drain: what
        # this test checks is the stream's content, read below over a connection of its own.
        with contextlib.suppress(nats.errors.ConnectionReconnectingError):
            await broker.stop()

        count, ids, message_ids = await _stored(server.url_for("accounting"))
    finally:
        server.stop()

    assert at_kill < EVENTS, "the server died after the whole batch was acknowledged: nothing was tested"
    assert any("not delivered yet" in r.getMessage() for r in caplog.records), "no publish failed"
    assert publisher.published == EVENTS  # each event counted once, its re-sends included
    assert sorted(ids) == sorted(e.event_id for e in events)  # every event, none twice
    assert count == EVENTS and sorted(message_ids) == sorted(ids)  # Nats-Msg-Id kept: the event id
    assert not any(spool.iterdir())  # every journal segment settled and deleted


async def test_published_messages_carry_the_ids_and_no_secret(tmp_path):
    """What FastStream's publisher adds to a usage message: its own correlation id and an empty content
    type beside ``Nats-Msg-Id`` and ``Nats-Expected-Stream``; the payload is the bytes as given."""
    token = secrets.token_hex(16)
    server = EmbeddedNats(tmp_path / "nats", token=token).start()
    try:
        broker = await started_broker(server.url)
        await ensure_topology(broker.connection.jetstream())
        publisher = UsagePublisher(broker, tmp_path / "spool", linger=0.0)
        event = usage_event("tok-headers", 7)
        publisher.record(event)
        await publisher.start()
        for _ in range(100):
            if publisher.published:
                break
            await asyncio.sleep(0.05)
        await publisher.stop()
        js = broker.connection.jetstream()
        sub = await js.subscribe(
            names.USAGE_SUBJECT,
            ordered_consumer=True,
            config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
        )
        msg = await sub.next_msg(timeout=5)
        await broker.stop()
    finally:
        server.stop()

    headers = dict(msg.headers or {})
    assert headers.pop("Nats-Msg-Id") == event.event_id
    assert headers.pop("Nats-Expected-Stream") == names.USAGE_STREAM
    assert headers.pop("content-type") == ""  # bytes: FastStream sets no content type, as before
    assert len(headers.pop("correlation_id")) == 36  # a random UUID per message
    assert not headers, headers
    assert msg.data == event.model_dump_json().encode()
    assert token not in repr(msg.headers) and token.encode() not in msg.data
