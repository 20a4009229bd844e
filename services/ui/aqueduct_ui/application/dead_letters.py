"""Use cases of the dead-letters page (Admins): what accounting could not store, and re-driving it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aqueduct_ui.adapters.api import UserApi, q

__all__ = ["DeadLettersPage", "load_dead_letters_page", "redrive_all", "redrive_one"]


@dataclass(frozen=True)
class DeadLettersPage:
    letters: list[dict[str, Any]]
    total: int
    after: int
    next_after: int | None


async def load_dead_letters_page(api: UserApi, after: int = 0, limit: int = 100) -> DeadLettersPage:
    answer = await api.accounting.get("/api/dead-letters", after=after, limit=limit)
    letters = [
        {
            **letter,
            "summary": str(letter.get("reason") or "").splitlines()[0][:300] if letter.get("reason") else "",
        }
        for letter in answer.get("dead_letters", [])
    ]
    return DeadLettersPage(letters, int(answer.get("total", 0)), after, answer.get("next_after"))


async def redrive_one(api: UserApi, letter_id: int) -> None:
    await api.accounting.post(f"/api/dead-letters/{q(str(letter_id))}/redrive")


async def redrive_all(api: UserApi) -> tuple[int, list[dict[str, Any]]]:
    """How many were stored, and those still failing (id, reason)."""
    answer = await api.accounting.post("/api/dead-letters/redrive")
    return len(answer.get("redriven", [])), list(answer.get("failed", []))
