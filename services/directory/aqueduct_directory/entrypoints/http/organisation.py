"""Routes for the caller, orgs, teams, members and users."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from aqueduct_directory.entrypoints.http.deps import CurrentUser, DirectoryDep
from aqueduct_directory.entrypoints.http.schemas import (
    MemberIn,
    OrgIn,
    OrgPatch,
    TeamIn,
    TeamPatch,
    TermsAcceptIn,
    UserIn,
    UserPatch,
)

__all__ = ["router"]

router = APIRouter(prefix="/api")
Json = dict[str, Any]


@router.get("/me", tags=["me"])
async def me(user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.me(user)


@router.post("/me/terms", tags=["me"])
async def accept_terms(body: TermsAcceptIn, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.accept_terms(user, body.version)


@router.get("/orgs", tags=["orgs"])
async def list_orgs(user: CurrentUser, directory: DirectoryDep) -> list[Json]:
    return directory.list_orgs(user)


@router.post("/orgs", tags=["orgs"], status_code=201)
async def create_org(body: OrgIn, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.create_org(user, **body.model_dump())


@router.get("/orgs/{org_id}", tags=["orgs"])
async def get_org(org_id: str, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.get_org(user, org_id)


@router.patch("/orgs/{org_id}", tags=["orgs"])
async def update_org(org_id: str, body: OrgPatch, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.update_org(user, org_id, **body.model_dump(exclude_unset=True))


@router.get("/teams", tags=["teams"])
async def list_teams(user: CurrentUser, directory: DirectoryDep, org_id: str | None = None) -> list[Json]:
    return directory.list_teams(user, org_id)


@router.post("/teams", tags=["teams"], status_code=201)
async def create_team(body: TeamIn, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.create_team(user, **body.model_dump())


@router.get("/teams/{team_id}", tags=["teams"])
async def get_team(team_id: str, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.get_team(user, team_id)


@router.patch("/teams/{team_id}", tags=["teams"])
async def update_team(team_id: str, body: TeamPatch, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.update_team(user, team_id, **body.model_dump(exclude_unset=True))


@router.delete("/teams/{team_id}", tags=["teams"], status_code=204)
async def delete_team(team_id: str, user: CurrentUser, directory: DirectoryDep) -> Response:
    directory.delete_team(user, team_id)
    return Response(status_code=204)


@router.post("/teams/{team_id}/members", tags=["teams"])
async def add_member(team_id: str, body: MemberIn, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.add_member(user, team_id, body.user_id, body.team_admin)


@router.delete("/teams/{team_id}/members/{user_id}", tags=["teams"], status_code=204)
async def remove_member(team_id: str, user_id: str, user: CurrentUser, directory: DirectoryDep) -> Response:
    directory.remove_member(user, team_id, user_id)
    return Response(status_code=204)


@router.post("/teams/{team_id}/members/{user_id}/promote", tags=["teams"])
async def promote_member(team_id: str, user_id: str, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.promote_member(user, team_id, user_id)


@router.get("/users", tags=["users"])
async def list_users(user: CurrentUser, directory: DirectoryDep, org_id: str | None = None) -> list[Json]:
    return directory.list_users(user, org_id)


@router.post("/users", tags=["users"], status_code=201)
async def create_user(body: UserIn, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.create_user(user, **body.model_dump())


@router.get("/users/{user_id}", tags=["users"])
async def get_user(user_id: str, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.get_user(user, user_id)


@router.patch("/users/{user_id}", tags=["users"])
async def update_user(user_id: str, body: UserPatch, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.update_user(user, user_id, **body.model_dump(exclude_unset=True))


@router.delete("/users/{user_id}", tags=["users"], status_code=204)
async def deactivate_user(user_id: str, user: CurrentUser, directory: DirectoryDep) -> Response:
    directory.deactivate_user(user, user_id)
    return Response(status_code=204)
