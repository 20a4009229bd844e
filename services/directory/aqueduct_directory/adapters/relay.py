"""Outbox relay: the notification log -> JetStream, at least once, deduplicated by notification id.

The position is stored only after JetStream acknowledged every message up to it, so a crash or an
outage of the bus republishes from there; ``Nats-Msg-Id`` lets JetStream drop what it already has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Notification
from faststream.nats import NatsBroker

from aqueduct_directory.adapters.background import WokenByCommits
from aqueduct_directory.adapters.metrics import RELAY_POSITION, RELAY_PUBLISHED
from aqueduct_directory.adapters.persistence import PositionStore
from aqueduct_directory.application.base import DirectoryCore
from aqueduct_directory.application.translate import to_integration_event
from aqueduct_libs import names
from aqueduct_libs.publishers import directory_events_publisher, publish_all

__all__ = ["OutboxRelay"]

log = logging.getLogger(__name__)

POSITION_NAME = "outbox_relay"
BATCH = 500
# How long a page may wait for its acknowledgements. Short, with quick retries (re-sent messages are
# dropped by their Nats-Msg-Id), so a page sent while a NATS cluster elects a new leader for the stream
# lands right after the election rather than a long timeout later.
ACK_TIMEOUT = 3.0
RETRY_CAP = 1.0


class OutboxRelay(WokenByCommits):
    task_name = "outbox-relay"

    def __init__(self, app: DirectoryCore, broker: NatsBroker, positions: PositionStore) -> None:
        super().__init__()
        self._app = app
        self._publisher = directory_events_publisher(broker)
        self._positions = positions
        self.published = 0

    @property
    def position(self) -> int:
        return self._positions.get(POSITION_NAME)

    async def publish_pending(self) -> int:
        """Publish everything after the stored position; returns how many messages went out."""
        sent = 0
        while True:
            start = self._positions.get(POSITION_NAME) + 1
            page = self._app.recorder.select_notifications(start=start, limit=BATCH)
            if not page:
                return sent
            for result in await asyncio.wait_for(self._publish_page(page), ACK_TIMEOUT):
                if isinstance(result, BaseException):
                    raise result
            sent += len(page)
            self._positions.set(POSITION_NAME, page[-1].id)
            self.published += len(page)
            RELAY_PUBLISHED.inc(len(page))
            RELAY_POSITION.set(page[-1].id)

    async def _publish_page(self, page: Sequence[Notification]) -> list[Any]:
        # The whole page in flight at once; every ack must arrive before the position moves.
        messages = []
        for notification in page:
            event = to_integration_event(self._app.mapper.to_domain_event(notification), notification.id)
            subject = names.directory_event_subject(event.type)
            messages.append((subject, event.model_dump_json().encode(), str(notification.id)))
        return await publish_all(self._publisher, messages, ACK_TIMEOUT)

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                # Cleared before publishing, so a command saved meanwhile wakes the next round.
                self._wake.clear()
                await self.publish_pending()
                delay = 0.2
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=5)
                except TimeoutError:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus is down: keep the position, try again later
                log.warning("outbox relay could not publish (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)
