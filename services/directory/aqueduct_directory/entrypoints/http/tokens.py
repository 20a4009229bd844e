"""Routes for API tokens and service accounts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from aqueduct_directory.entrypoints.http.deps import CurrentUser, DirectoryDep
from aqueduct_directory.entrypoints.http.paging import Paged, paged
from aqueduct_directory.entrypoints.http.schemas import (
    ServiceAccountIn,
    ServiceAccountPatch,
    TokenIn,
    TokenPatch,
    TokenRegenerateIn,
)

__all__ = ["router"]

router = APIRouter(prefix="/api")
Json = dict[str, Any]

TOKEN_FIELDS = ("name", "preview", "expires_at", "created_at", "id")
SERVICE_ACCOUNT_FIELDS = ("name", "description", "id")


@router.get("/tokens", tags=["tokens"])
async def list_tokens(
    user: CurrentUser, directory: DirectoryDep, page: Paged, response: Response, user_id: str | None = None
) -> list[Json]:
    return paged(page, response, directory.list_tokens(user, user_id), TOKEN_FIELDS)


@router.post("/tokens", tags=["tokens"], status_code=201)
async def issue_token(body: TokenIn, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.issue_token(user, body.name, body.expires_at, body.team_id, body.management)


@router.get("/tokens/{token_id}", tags=["tokens"])
async def get_token(token_id: str, user: CurrentUser, directory: DirectoryDep) -> Json:
    return directory.get_token(user, token_id)


@router.patch("/tokens/{token_id}", tags=["tokens"])
async def update_token(token_id: str, body: TokenPatch, user: CurrentUser, directory: DirectoryDep) -> Json:
    """Limits (Admins) and expiry (the token's manager; ``null`` for none)."""
    answer = directory.get_token(user, token_id)
    if "expires_at" in body.model_fields_set:
        answer = directory.change_token_expiry(user, token_id, body.expires_at)
    if body.limits is not None:
        answer = directory.set_token_limits(user, token_id, body.limits)
    return answer


@router.post("/tokens/{token_id}/regenerate", tags=["tokens"])
async def regenerate_token(
    token_id: str, user: CurrentUser, directory: DirectoryDep, body: TokenRegenerateIn | None = None
) -> Json:
    """A new value (shown once); ``expires_at`` in the body also sets a new expiry (needed when expired)."""
    if body is not None and "expires_at" in body.model_fields_set:
        return directory.regenerate_token(user, token_id, body.expires_at)
    return directory.regenerate_token(user, token_id)


@router.delete("/tokens/{token_id}", tags=["tokens"], status_code=204)
async def revoke_token(token_id: str, user: CurrentUser, directory: DirectoryDep) -> Response:
    directory.revoke_token(user, token_id)
    return Response(status_code=204)


@router.get("/teams/{team_id}/service-accounts", tags=["service accounts"])
async def list_service_accounts(
    team_id: str, user: CurrentUser, directory: DirectoryDep, page: Paged, response: Response
) -> list[Json]:
    return paged(page, response, directory.list_service_accounts(user, team_id), SERVICE_ACCOUNT_FIELDS)


@router.post("/teams/{team_id}/service-accounts", tags=["service accounts"], status_code=201)
async def create_service_account(
    team_id: str, body: ServiceAccountIn, user: CurrentUser, directory: DirectoryDep
) -> Json:
    return directory.create_service_account(user, team_id, body.name, body.description)


@router.patch("/service-accounts/{sa_id}", tags=["service accounts"])
async def update_service_account(
    sa_id: str, body: ServiceAccountPatch, user: CurrentUser, directory: DirectoryDep
) -> Json:
    return directory.update_service_account(user, sa_id, **body.model_dump(exclude_unset=True))


@router.delete("/service-accounts/{sa_id}", tags=["service accounts"], status_code=204)
async def delete_service_account(sa_id: str, user: CurrentUser, directory: DirectoryDep) -> Response:
    directory.delete_service_account(user, sa_id)
    return Response(status_code=204)
