"""The dead-letter stream (``names.DEAD_LETTERS_STREAM``): send, list, read and remove dead letters.

One message per subject (the stream keeps only the last), so a letter sent again for the same message or
event (a redelivery after a crash before the ack) replaces itself; a re-driven letter is purged by subject.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from aqueduct_libs import names
from aqueduct_libs.events import DeadLetter
from aqueduct_libs.publishers import dead_letters_publisher

__all__ = ["DeadLetterNotFoundError", "DeadLetters", "StoredDeadLetter"]

log = logging.getLogger(__name__)

_ALL = f"{names.DEAD_LETTERS_SUBJECT_PREFIX}.>"
_ACK_TIMEOUT = 5.0  # nats-py's own default for a JetStream publish


class DeadLetterNotFoundError(LookupError):
    """No dead letter has that id (never had, or it was re-driven)."""


@dataclass(frozen=True)
class StoredDeadLetter:
    id: int  # its sequence in the dead-letter stream
    subject: str
    letter: DeadLetter


class DeadLetters:
    def __init__(self, broker: NatsBroker, on_sent: Callable[[str], None] | None = None) -> None:
        """``broker``: the service's, connected before the first letter is sent or read."""
        self._broker = broker
        self._publisher = dead_letters_publisher(broker)
        self._on_sent = on_sent

    @property
    def _js(self) -> JetStreamContext:
        return self._broker.connection.jetstream()

    async def send(self, letter: DeadLetter, key: str | None = None) -> None:
        """Publish and wait for the stream to hold it (the caller acknowledges the original only then).
        ``key``: for a letter without a place in its stream (``names.dead_letter_subject``)."""
        subject = names.dead_letter_subject(letter.source_stream, letter.source_sequence, letter.index, key)
        await self._publisher.publish(
            letter.model_dump_json().encode(),
            subject,
            headers={"Nats-Msg-Id": f"{subject}:{letter.tries}"},
            timeout=_ACK_TIMEOUT,
        )
        log.warning(
            "dead letter %s (consumer %s): %s", subject, letter.consumer, letter.reason.splitlines()[0][:500]
        )
        if self._on_sent is not None:
            self._on_sent(letter.source_stream)

    async def count(self) -> int:
        info = await self._js.stream_info(names.DEAD_LETTERS_STREAM)
        return int(info.state.messages)

    async def list(self, after: int = 0, limit: int = 100) -> list[StoredDeadLetter]:
        """Up to ``limit`` letters with an id above ``after``, oldest first."""
        found: list[StoredDeadLetter] = []
        seq = after + 1
        while len(found) < limit:
            try:
                raw = await self._js.get_msg(names.DEAD_LETTERS_STREAM, seq=seq, subject=_ALL, next=True)
            except NotFoundError:
                break
            found.append(self._stored(raw.seq or seq, raw.subject or "", raw.data or b""))
            seq = (raw.seq or seq) + 1
        return found

    async def get(self, letter_id: int) -> StoredDeadLetter:
        try:
            raw = await self._js.get_msg(names.DEAD_LETTERS_STREAM, seq=letter_id)
        except NotFoundError as exc:
            raise DeadLetterNotFoundError(f"no dead letter {letter_id}") from exc
        return self._stored(letter_id, raw.subject or "", raw.data or b"")

    async def remove(self, stored: StoredDeadLetter) -> None:
        await self._js.purge_stream(names.DEAD_LETTERS_STREAM, subject=stored.subject)

    @staticmethod
    def _stored(seq: int, subject: str, data: bytes) -> StoredDeadLetter:
        return StoredDeadLetter(seq, subject, DeadLetter.model_validate_json(data))
