"""Use cases of the tokens page: what the viewer sees and may do with their tokens."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aqueduct_ui.adapters.api import UserApi, items, q
from aqueduct_ui.domain.viewer import Viewer

__all__ = [
    "TokenRow",
    "TokensPage",
    "accept_terms",
    "create_token",
    "delete_token",
    "load_tokens_page",
    "regenerate_token",
]

_CAP_KEYS = ("max_tokens_per_user", "token_cap", "max_tokens")


@dataclass(frozen=True)
class TokenRow:
    id: str
    name: str
    preview: str
    expires_at: datetime | None
    created_at: datetime | None
    service_account: str | None  # name of the service account, None for a personal token
    team: str | None
    can_regenerate: bool
    can_delete: bool
    management: bool = False  # may also use the management API with its owner's roles

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= datetime.now(UTC)


@dataclass(frozen=True)
class TokensPage:
    personal: list[TokenRow]
    service_accounts: list[TokenRow]
    cap: int | None
    terms_to_accept: dict[str, Any] | None = None  # {"version", "url"} while the user has not accepted

    @property
    def at_cap(self) -> bool:
        return self.cap is not None and len(self.personal) >= self.cap


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def load_tokens_page(api: UserApi, viewer: Viewer, default_cap: int | None = None) -> TokensPage:
    tokens = [t for t in items(await api.directory.get("/api/tokens"), "tokens") if not t.get("revoked")]
    me = await api.directory.get("/api/me")
    cap = next((int(me[k]) for k in _CAP_KEYS if isinstance(me, dict) and me.get(k) is not None), default_cap)
    sa_names: dict[str, str] = {}
    team_names: dict[str, str] = {}
    if any(t.get("service_account_id") for t in tokens):
        # Every team at once, not one after the other: a Team-Admin of many teams waited for each in turn.
        team_ids = sorted({t["team_id"] for t in tokens if t.get("service_account_id") and t.get("team_id")})
        answers = await asyncio.gather(
            *(api.directory.get(f"/api/teams/{q(team_id)}") for team_id in team_ids),
            *(api.directory.get(f"/api/teams/{q(team_id)}/service-accounts") for team_id in team_ids),
        )
        for team_id, team, accounts in zip(
            team_ids, answers[: len(team_ids)], answers[len(team_ids) :], strict=True
        ):
            team_names[team_id] = team.get("name", team_id)
            for sa in items(accounts, "service_accounts"):
                sa_names[sa["id"]] = sa.get("name", sa["id"])

    personal: list[TokenRow] = []
    service: list[TokenRow] = []
    for t in tokens:
        sa_id = t.get("service_account_id")
        team_id = t.get("team_id")
        own = t.get("user_id") == viewer.user_id
        manages = team_id is not None and viewer.manages_team(team_id, t.get("org_id"))
        row = TokenRow(
            id=t["id"],
            name=t.get("name", ""),
            preview=t.get("preview", ""),
            expires_at=_time(t.get("expires_at")),
            created_at=_time(t.get("created_at")),
            service_account=sa_names.get(sa_id, "service account") if sa_id else None,
            team=team_names.get(team_id or "", team_id) if sa_id else None,
            can_regenerate=own or (bool(sa_id) and manages),
            can_delete=own or (bool(sa_id) and manages),
            management=t.get("management") is True,
        )
        (service if sa_id else personal).append(row)
    personal.sort(key=lambda r: r.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    service.sort(key=lambda r: ((r.team or ""), (r.service_account or ""), r.name))
    pending_terms = (
        me.get("tos_current") if isinstance(me, dict) and me.get("tos_accepted") is False else None
    )
    return TokensPage(personal=personal, service_accounts=service, cap=cap, terms_to_accept=pending_terms)


async def create_token(
    api: UserApi, name: str, expires_at: str | None, management: bool = False
) -> tuple[dict[str, Any], str]:
    body = {"name": name, "expires_at": expires_at, "management": management}
    answer = await api.directory.post("/api/tokens", body)
    return answer["token"], answer["value"]


_UNCHANGED = object()


async def regenerate_token(
    api: UserApi, token_id: str, expires_at: str | object | None = _UNCHANGED
) -> tuple[dict[str, Any], str]:
    """A new value; with ``expires_at`` (an ISO time, or None for never) also a new expiry."""
    body = {} if expires_at is _UNCHANGED else {"expires_at": expires_at}
    answer = await api.directory.post(f"/api/tokens/{q(token_id)}/regenerate", body)
    return answer["token"], answer["value"]


async def change_expiry(api: UserApi, token_id: str, expires_at: str | None) -> dict[str, Any]:
    return dict(await api.directory.patch(f"/api/tokens/{q(token_id)}", {"expires_at": expires_at}))


async def accept_terms(api: UserApi, version: str) -> None:
    await api.directory.post("/api/me/terms", {"version": version})


async def delete_token(api: UserApi, token_id: str) -> None:
    await api.directory.delete(f"/api/tokens/{q(token_id)}")
