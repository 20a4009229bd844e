"""Use case: list dead letters, read one, and re-drive them once the cause is fixed.

A re-drive stores the letter's payload through the same decoding and store as the consumer it came from,
so the same deduplication applies (by ``event_id`` for usage, ``notification_id`` for directory events):
re-driving a letter twice, or one whose event was stored meanwhile, counts nothing twice. A letter leaves
the stream only once stored; one that still fails stays, and the answer says why.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aqueduct_accounting.adapters.dead_letters import DeadLetters, StoredDeadLetter

__all__ = ["DeadLetterAdmin", "RedriveResult", "StillFailingError"]

log = logging.getLogger(__name__)

# source stream -> stores one payload of that stream, raising ValueError with the reason if it cannot
Redrive = Callable[[bytes], Awaitable[None]]


class StillFailingError(ValueError):
    """The letter still cannot be stored (the reason is the message); it stays in the stream."""


@dataclass(frozen=True)
class RedriveResult:
    redriven: list[int]
    failed: list[dict[str, Any]]  # {"id": ..., "reason": ...}


def letter_view(stored: StoredDeadLetter) -> dict[str, Any]:
    return {"id": stored.id, **stored.letter.model_dump(mode="json")}


class DeadLetterAdmin:
    def __init__(
        self,
        letters: DeadLetters,
        redrives: Mapping[str, Redrive],
        on_redriven: Callable[[int], None] | None = None,
    ) -> None:
        self._letters = letters
        self._redrives = redrives
        self._on_redriven = on_redriven

    async def list(self, after: int = 0, limit: int = 100) -> dict[str, Any]:
        found = await self._letters.list(after, limit)
        return {
            "total": await self._letters.count(),
            "dead_letters": [letter_view(s) for s in found],
            "next_after": found[-1].id if len(found) == limit else None,
        }

    async def show(self, letter_id: int) -> dict[str, Any]:
        return letter_view(await self._letters.get(letter_id))

    async def redrive(self, letter_id: int) -> dict[str, Any]:
        stored = await self._letters.get(letter_id)
        await self._redrive(stored)
        return {"id": letter_id, "redriven": True}

    async def redrive_all(self, limit: int = 1000) -> RedriveResult:
        result = RedriveResult([], [])
        for stored in await self._letters.list(0, limit):
            try:
                await self._redrive(stored)
            except StillFailingError as exc:
                result.failed.append({"id": stored.id, "reason": str(exc)})
            else:
                result.redriven.append(stored.id)
        return result

    async def _redrive(self, stored: StoredDeadLetter) -> None:
        redrive = self._redrives.get(stored.letter.source_stream)
        if redrive is None:
            raise StillFailingError(f"no consumer here stores the {stored.letter.source_stream} stream")
        try:
            await redrive(stored.letter.payload.encode())
        except ValueError as exc:
            raise StillFailingError(str(exc)) from exc
        await self._letters.remove(stored)
        log.info("dead letter %d (%s) re-driven and stored", stored.id, stored.subject)
        if self._on_redriven is not None:
            self._on_redriven(1)
