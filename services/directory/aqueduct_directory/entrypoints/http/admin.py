"""Routes for config apply, replay and audit (Admin only)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request, Response

from aqueduct_directory.application.audit import audit_events, model_access_at, state_at
from aqueduct_directory.application.config_apply import apply_config, parse_config
from aqueduct_directory.entrypoints.http.deps import CurrentUser, DirectoryDep

__all__ = ["router"]

router = APIRouter(prefix="/api")
Json = dict[str, Any]


@router.post("/config/apply", tags=["admin"])
async def apply(
    user: CurrentUser,
    directory: DirectoryDep,
    body: Annotated[str, Body(media_type="application/yaml")],
    dry_run: bool = False,
) -> Json:
    user.require_admin("apply configuration")
    changes = apply_config(directory, user, parse_config(body), dry_run=dry_run)
    return {"dry_run": dry_run, "changes": changes}


@router.post("/admin/replay", tags=["admin"])
async def replay(request: Request, user: CurrentUser) -> Json:
    user.require_admin("replay the event log")
    return await request.app.state.replay()


@router.get("/audit/events", tags=["audit"])
async def events(
    user: CurrentUser,
    directory: DirectoryDep,
    response: Response,
    aggregate_id: Annotated[
        str | None, Query(max_length=200, description="Only events of this object")
    ] = None,
    actor: Annotated[
        str | None, Query(max_length=200, description="Only events caused by this user id")
    ] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    type: Annotated[
        str | None, Query(max_length=100, description="Only events of this type, e.g. TokenIssued")
    ] = None,
    aggregate_type: Annotated[
        str | None, Query(max_length=100, description="Only events of this kind of object, e.g. User")
    ] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="desc: newest first")] = "asc",
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=100_000_000)] = 0,
    changes: Annotated[
        bool, Query(description="Add actor_name, aggregate_name and each field's value before the change")
    ] = False,
    before_id: Annotated[
        int | None, Query(ge=1, description="Cursor: only events older than this notification id")
    ] = None,
    after_id: Annotated[
        int | None, Query(ge=0, description="Cursor: only events newer than this notification id")
    ] = None,
) -> list[Json]:
    """The event log, one page; ``X-Total-Count`` says how many events match in all (cursor aside).
    Newest first, the next page is ``before_id=`` the last event's ``notification_id``."""
    # The page's events (and their "before" states) are read from the store: off the event loop.
    found, total = await asyncio.to_thread(
        audit_events,
        directory,
        user,
        aggregate_id,
        actor,
        since,
        until,
        limit,
        offset,
        order == "desc",
        type,
        aggregate_type,
        changes,
        before_id,
        after_id,
    )
    response.headers["X-Total-Count"] = str(total)
    return found


@router.get("/audit/at", tags=["audit"])
async def at(user: CurrentUser, directory: DirectoryDep, time: datetime, aggregate_id: str) -> Json:
    return await asyncio.to_thread(state_at, directory, user, time, aggregate_id)


@router.get("/audit/model-access", tags=["audit"])
async def model_access(user: CurrentUser, directory: DirectoryDep, model: str, time: datetime) -> list[Json]:
    return await asyncio.to_thread(model_access_at, directory, user, model, time)
