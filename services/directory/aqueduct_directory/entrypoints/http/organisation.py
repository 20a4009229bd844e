"""Routes for the caller, orgs, teams, members and users."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from aqueduct_directory.entrypoints.http.deps import CurrentUser, DirectoryDep
from aqueduct_directory.entrypoints.http.paging import Paged, paged
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

ORG_FIELDS = ("name", "sso_group", "id")
TEAM_FIELDS = ("name", "description", "org_id", "id")
USER_FIELDS = ("email", "name", "org_id", "id", "created_at")


@router.get("/me", tags=["me"])
async def me(user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.me(user)


@router.post("/me/terms", tags=["me"])
async def accept_terms(body: TermsAcceptIn, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.accept_terms(user, body.version)


@router.get("/orgs", tags=["orgs"])
async def list_orgs(
    user: CurrentUser, directory: DirectoryDep, page: Paged, response: Response
) -> list[Json]:
    return paged(page, response, directory.list_orgs(user), ORG_FIELDS)


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
async def list_teams(
    user: CurrentUser,
    directory: DirectoryDep,
    page: Paged,
    response: Response,
    org_id: str | None = None,
    brief: Annotated[
        bool, Query(description="Without the members: their number (member_count) instead")
    ] = False,
) -> list[Json]:
    return paged(page, response, directory.list_teams(user, org_id, brief), TEAM_FIELDS)


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


@router.post("/teams/{team_id}/members/{user_id}/demote", tags=["teams"])
async def demote_member(team_id: str, user_id: str, user: CurrentUser, directory: DirectoryDep) -> Json:
    """A Team-Admin becomes a plain member of the team."""
    return directory.demote_member(user, team_id, user_id)


@router.get("/users", tags=["users"])
async def list_users(
    user: CurrentUser,
    directory: DirectoryDep,
    page: Paged,
    response: Response,
    org_id: str | None = None,
    include_deactivated: Annotated[
        bool, Query(description="Org-Admins and Admins: list deactivated users too")
    ] = False,
) -> list[Json]:
    return paged(page, response, directory.list_users(user, org_id, include_deactivated), USER_FIELDS)


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


@router.post("/users/{user_id}/reactivate", tags=["users"])
async def reactivate_user(user_id: str, user: CurrentUser, directory: DirectoryDep) -> Json:
    """A deactivated user can sign in again; their unexpired tokens work again."""
    return directory.reactivate_user(user, user_id)
