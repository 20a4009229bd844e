"""What a consumer does with what it cannot store: bounded tries, then the dead-letter stream; ingest goes on.

A batch that keeps failing is either the engine's fault (down, a table missing: every statement fails) or
a few messages' (a value the engine refuses). ``healthy`` tells which: while the engine is unhealthy the
batch is retried as before (nothing is lost; the service reports not-ready), otherwise the batch is halved
until the messages (and, through ``split``, the events of a message) that fail on their own are found.
Those go to the dead-letter stream with the reason; everything else is stored and acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from nats.aio.msg import Msg

from aqueduct_accounting.adapters.dead_letters import DeadLetters
from aqueduct_libs.events import DeadLetter

__all__ = [
    "DeadLetterPolicy",
    "GuardedStore",
    "Letter",
    "RedriveRefusedError",
    "Rejected",
    "StoreAbandonedError",
]

T = TypeVar("T")

log = logging.getLogger(__name__)


class Rejected(Protocol):
    """A part of a message refused at decoding (one event of an array)."""

    @property
    def index(self) -> int | None: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def reason(self) -> str: ...


class StoreAbandonedError(RuntimeError):
    """The service is stopping while a batch still fails: it is left unacknowledged, to come back."""


class RedriveRefusedError(ValueError):
    """A dead letter still cannot be stored; the letter stays, with this reason."""


@dataclass(frozen=True)
class Letter:
    """A dead letter about to be sent: the message, which event of it (None: all of it), what, why."""

    msg: Msg
    index: int | None
    payload: bytes
    reason: str
    tries: int


@dataclass
class DeadLetterPolicy(Generic[T]):
    letters: DeadLetters
    # Tries of a batch before looking for the messages at fault; a message is dead-lettered after failing
    # alone once more.
    max_tries: int = 5
    # The parts of a decoded message refused at decoding (sent as dead letters; the rest is stored).
    rejected_of: Callable[[T], Sequence[Rejected]] | None = None
    # A message holding several events, as (index, event payload, decoded event): to dead-letter only the
    # events that fail to store.
    split: Callable[[bytes], list[tuple[int, bytes, T]]] | None = None
    # Does the engine work at all (a cheap statement on the target table)?
    healthy: Callable[[], Awaitable[bool]] | None = None
    retry_delay: float = 0.2
    max_retry_delay: float = 5.0


class GuardedStore(Generic[T]):
    """``store`` with bounded tries and isolation of the failing messages; one store at a time."""

    def __init__(
        self,
        store: Callable[[list[T]], Awaitable[object]],
        policy: DeadLetterPolicy[T],
        *,
        stream: str,
        consumer: str,
        on_store_failed: Callable[[], None] | None = None,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self._store = store
        self._stopping = stopping
        self._policy = policy
        self._stream = stream
        self._consumer = consumer
        self._on_store_failed = on_store_failed
        self._lock = asyncio.Lock()
        # Since when every store has failed (monotonic), None while stores succeed: ingest is stuck.
        self.failing_since: float | None = None

    async def try_store(self, items: list[T]) -> str | None:
        """Store once; the failure's text, or None."""
        async with self._lock:
            try:
                await self._store(items)
            except Exception as exc:  # the engine's refusal, whatever its type: the reason of a letter
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                if self._on_store_failed is not None:
                    self._on_store_failed()
                return f"{type(exc).__name__}: {exc}".strip()
        self.failing_since = None
        return None

    async def _healthy(self) -> bool:
        if self._policy.healthy is None:
            return True
        try:
            return await self._policy.healthy()
        except Exception:
            return False

    async def store(self, pairs: list[tuple[Msg, T]]) -> list[Letter]:
        """Store the batch; return the letters of what cannot be stored (everything else is stored)."""
        delay = self._policy.retry_delay
        tries = 0
        while True:
            error = await self.try_store([item for _, item in pairs])
            if error is None:
                return []
            tries += 1
            log.error("%s: storing %d messages failed (try %d): %s", self._consumer, len(pairs), tries, error)
            if tries >= self._policy.max_tries and await self._healthy():
                return await self._isolate(pairs, error)
            if self._stopping is not None and self._stopping.is_set():
                raise StoreAbandonedError(f"stopping with {len(pairs)} messages not stored: {error}")
            # Not acked, so nothing is lost; retry the same items (stores are idempotent).
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._policy.max_retry_delay)

    async def _isolate(self, pairs: list[tuple[Msg, T]], error: str) -> list[Letter]:
        """``pairs`` fail together with ``error``: store the parts that can be, letters for the rest."""
        tries = self._policy.max_tries
        if len(pairs) == 1:
            msg = pairs[0][0]
            parts = self._policy.split(msg.data) if self._policy.split is not None else []
            if len(parts) <= 1:
                return [Letter(msg, None, msg.data, error, tries)]
            letters = []
            for index, payload, part in parts:
                part_error = await self.try_store([part])
                if part_error is not None:
                    letters.append(Letter(msg, index, payload, part_error, tries))
            return letters
        middle = len(pairs) // 2
        letters = []
        for half in (pairs[:middle], pairs[middle:]):
            half_error = await self.try_store([item for _, item in half])
            if half_error is not None:
                letters += await self._isolate(half, half_error)
        return letters

    async def redrive(self, item: T) -> None:
        """Store one decoded dead letter (deduplicated like any other); raises RedriveRefusedError."""
        rejected = list(self._policy.rejected_of(item)) if self._policy.rejected_of else []
        if rejected:
            raise RedriveRefusedError(rejected[0].reason)
        error = await self.try_store([item])
        if error is not None:
            raise RedriveRefusedError(error)

    async def send(self, letters: list[Letter]) -> None:
        for letter in letters:
            metadata = letter.msg.metadata
            await self._policy.letters.send(
                DeadLetter(
                    source_stream=self._stream,
                    source_subject=letter.msg.subject,
                    source_sequence=metadata.sequence.stream if metadata.sequence else 0,
                    index=letter.index,
                    consumer=self._consumer,
                    reason=letter.reason[:4000],
                    tries=letter.tries,
                    payload=letter.payload.decode("utf-8", errors="replace"),
                )
            )

    def letters_of_decoding(self, msg: Msg, item: T | None, reason: str | None) -> list[Letter]:
        """Letters for a message that cannot be read (``reason``) or for its refused parts."""
        if item is None:
            return [Letter(msg, None, msg.data, reason or "unreadable", 1)]
        if self._policy.rejected_of is None:
            return []
        return [Letter(msg, r.index, r.payload, r.reason, 1) for r in self._policy.rejected_of(item)]
