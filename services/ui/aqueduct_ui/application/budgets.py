"""Budget state for the pages: what is spent, what remains and when it resets, from accounting's
``/api/budgets/status``, with the scope named the way the viewer knows it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aqueduct_ui.adapters.api import ApiError, UserApi, items, q
from aqueduct_ui.domain.viewer import Viewer

__all__ = ["BudgetLine", "BudgetState", "load_budget_state"]

log = logging.getLogger(__name__)

_PERIOD = {"day": "Daily", "month": "Monthly"}


@dataclass(frozen=True)
class BudgetLine:
    scope: str
    scope_id: str
    owner: str  # "You", "Team Physics", "Your organisation"
    period: str  # "Daily" / "Monthly"
    limit: str
    spent: str
    remaining: str
    used_up: bool
    resets_at: datetime

    @property
    def reason(self) -> str:
        """Why requests are refused while it is used up."""
        what = {"user": "your", "team": f"{self.owner.removeprefix('Team ')}'s", "org": "your organisation's"}
        return (
            f"budget used up: {what.get(self.scope, 'a')} {self.period.lower()} budget of {self.limit} "
            f"(resets {self.resets_at:%Y-%m-%d %H:%M} UTC)"
        )


@dataclass(frozen=True)
class BudgetState:
    lines: list[BudgetLine]
    unavailable: str | None = None  # accounting could not answer: said on the page, not hidden

    @property
    def used_up(self) -> list[BudgetLine]:
        return [line for line in self.lines if line.used_up]


async def _team_name(api: UserApi, team_id: str) -> str:
    try:
        team = await api.directory.get(f"/api/teams/{q(team_id)}")
    except ApiError:
        return team_id[:8]
    return str(team.get("name") or team_id[:8]) if isinstance(team, dict) else team_id[:8]


def _owner(viewer: Viewer, scope: str, scope_id: str, team_names: dict[str, str]) -> str:
    if scope == "user":
        return "You" if scope_id == viewer.user_id else "User"
    if scope == "team":
        return f"Team {team_names.get(scope_id, scope_id[:8])}"
    return "Your organisation" if scope_id == viewer.org_id else "Organisation"


async def load_budget_state(
    api: UserApi,
    viewer: Viewer,
    scope: str | None = None,
    scope_id: str | None = None,
    team_names: dict[str, str] | None = None,
) -> BudgetState:
    """The viewer's own, teams' and org's budgets; or one scope's (``scope``, ``scope_id``)."""
    try:
        answer = await api.accounting.get("/api/budgets/status", scope=scope, id=scope_id)
    except ApiError as exc:
        log.warning("budget state unavailable: %s", exc)
        return BudgetState([], "Budget state is unavailable right now; try again shortly.")
    rows: list[dict[str, Any]] = items(answer, "budgets")
    names = dict(team_names or {})
    missing = sorted({r["scope_id"] for r in rows if r["scope"] == "team" and r["scope_id"] not in names})
    for team_id, name in zip(
        missing, await asyncio.gather(*(_team_name(api, t) for t in missing)), strict=True
    ):
        names[team_id] = name
    order = {"user": 0, "team": 1, "org": 2}
    lines = [
        BudgetLine(
            scope=r["scope"],
            scope_id=r["scope_id"],
            owner=_owner(viewer, r["scope"], r["scope_id"], names),
            period=_PERIOD.get(r["period"], r["period"]),
            limit=r["limit_text"],
            spent=r["spent_text"],
            remaining=r["remaining_text"],
            used_up=bool(r["used_up"]),
            resets_at=datetime.fromisoformat(r["resets_at"]),
        )
        for r in rows
    ]
    lines.sort(key=lambda line: (order.get(line.scope, 3), line.owner, line.period != "Daily"))
    return BudgetState(lines)
