"""The teams page and a team's page: limits, service accounts, members."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import Response

from aqueduct_ui.adapters.api import q
from aqueduct_ui.application import teams as use_cases
from aqueduct_ui.application.budgets import load_budget_state
from aqueduct_ui.domain.forms import (
    BUDGET_FIELDS,
    LIMIT_FIELDS,
    FormError,
    parse_budgets,
    parse_limits,
    parse_model_limits,
    require_text,
)
from aqueduct_ui.entrypoints.web.cookies import Flash
from aqueduct_ui.entrypoints.web.deps import Api, CurrentViewer
from aqueduct_ui.entrypoints.web.render import redirect, render

__all__ = ["router"]

router = APIRouter()

_STORE_IT = "Copy it now and keep it in a password manager: it is not stored and will not be shown again."


@router.get("/teams")
async def teams_page(
    request: Request,
    viewer: CurrentViewer,
    api: Api,
    org_id: str | None = None,
    search: Annotated[str, Query(alias="q", max_length=200)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    data = await use_cases.load_teams_page(api, viewer, org_id, search, page)
    return render(request, "teams.html", data=data, limit_fields=LIMIT_FIELDS, page_section="teams")


@router.post("/teams")
async def create_team(
    request: Request,
    api: Api,
    org_id: Annotated[str, Form()],
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
) -> Response:
    team = await api.directory.post(
        "/api/teams",
        {
            "org_id": org_id,
            "name": require_text(name, "Team name", 100, "name"),
            "description": description.strip(),
        },
    )
    return redirect(
        request, f"/teams/{team['id']}", Flash("success", f"Team “{team.get('name', name)}” created.")
    )


@router.post("/teams/{team_id}/delete")
async def delete_team(request: Request, api: Api, team_id: str) -> Response:
    await api.directory.delete(f"/api/teams/{q(team_id)}")
    return redirect(request, "/teams", Flash("success", "Team deleted."))


@router.get("/teams/{team_id}")
async def team_page(
    request: Request,
    viewer: CurrentViewer,
    api: Api,
    team_id: str,
    find: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    page = await use_cases.load_team_page(api, viewer, team_id, find)
    budgets = await load_budget_state(
        api, viewer, "team", team_id, {team_id: str(page.team.get("name") or team_id)}
    )
    return render(
        request,
        "team.html",
        data=page,
        budgets=budgets,
        limit_fields=LIMIT_FIELDS,
        budget_fields=BUDGET_FIELDS,
        page_section="teams",
    )


@router.post("/teams/{team_id}/settings")
async def update_team(request: Request, api: Api, team_id: str) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    body = {
        "name": require_text(form.get("name"), "Team name", 100, "name"),
        "description": (form.get("description") or "").strip(),
        "limits": parse_limits(form),
    }
    await api.directory.patch(f"/api/teams/{q(team_id)}", body)
    return redirect(request, f"/teams/{team_id}", Flash("success", "Team settings saved."))


@router.post("/teams/{team_id}/limits")
async def update_team_limits(request: Request, api: Api, team_id: str) -> Response:
    """A Team-Admin's form: the limits only (the directory holds them to the org's own values)."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    await api.directory.patch(f"/api/teams/{q(team_id)}", {"limits": parse_limits(form)})
    return redirect(request, f"/teams/{team_id}", Flash("success", "Team limits saved."))


@router.post("/teams/{team_id}/model-limits")
async def update_team_model_limits(request: Request, api: Api, team_id: str) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    await api.directory.patch(f"/api/teams/{q(team_id)}", {"model_limits": parse_model_limits(form)})
    return redirect(request, f"/teams/{team_id}", Flash("success", "Per-model limits of the team saved."))


@router.post("/teams/{team_id}/budgets")
async def update_team_budgets(request: Request, api: Api, team_id: str) -> Response:
    """Budgets, and excluded models when the form has them (an Org-Admin's); both are whole lists, so
    blanks clear what was set. A Team-Admin's form has no exclusions, so none are sent."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    body: dict[str, object] = {"budgets": parse_budgets(fields)}
    excluded = [v for v in form.getlist("excluded_models") if isinstance(v, str) and v]
    if excluded or fields.get("edit_exclusions"):
        body["excluded_models"] = excluded
    await api.directory.patch(f"/api/teams/{q(team_id)}", body)
    saved = "Team budgets and excluded models saved." if "excluded_models" in body else "Team budgets saved."
    return redirect(request, f"/teams/{team_id}", Flash("success", saved))


@router.post("/teams/{team_id}/service-accounts")
async def create_service_account(
    request: Request,
    api: Api,
    team_id: str,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
) -> Response:
    answer = await api.directory.post(
        f"/api/teams/{q(team_id)}/service-accounts",
        {
            "name": require_text(name, "Name", 100, "name"),
            "description": require_text(description, "Description", 500, "description"),
        },
    )
    account = answer.get("service_account", {})
    label = account.get("name", name)
    flash = Flash(
        "success", f"Service account “{label}” created with its token. {_STORE_IT}", answer["value"], label
    )
    return redirect(request, f"/teams/{team_id}", flash)


@router.post("/teams/{team_id}/service-accounts/{sa_id}/edit")
async def edit_service_account(
    request: Request,
    api: Api,
    team_id: str,
    sa_id: str,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
) -> Response:
    body = {"name": require_text(name, "Name", 100, "name"), "description": description.strip()}
    await api.directory.patch(f"/api/service-accounts/{q(sa_id)}", body)
    return redirect(request, f"/teams/{team_id}", Flash("success", "Service account saved."))


@router.post("/teams/{team_id}/service-accounts/{sa_id}/transfer")
async def transfer_service_account(
    request: Request, api: Api, team_id: str, sa_id: str, owner_user_id: Annotated[str, Form()] = ""
) -> Response:
    if not owner_user_id:
        raise FormError("Choose the member who will own the service account.")
    await api.directory.patch(f"/api/service-accounts/{q(sa_id)}", {"owner_user_id": owner_user_id})
    return redirect(request, f"/teams/{team_id}", Flash("success", "Ownership transferred."))


@router.post("/teams/{team_id}/tokens/{token_id}/limits")
async def set_service_account_token_limits(
    request: Request, api: Api, team_id: str, token_id: str
) -> Response:
    """A service account token's own limits (the directory lets only Admins set them)."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    token = await api.directory.patch(f"/api/tokens/{q(token_id)}", {"limits": parse_limits(form)})
    flash = Flash("success", f"Limits of token {token.get('name', '')} saved.")
    return redirect(request, f"/teams/{team_id}", flash)


@router.post("/teams/{team_id}/service-accounts/{sa_id}/delete")
async def delete_service_account(request: Request, api: Api, team_id: str, sa_id: str) -> Response:
    await api.directory.delete(f"/api/service-accounts/{q(sa_id)}")
    return redirect(request, f"/teams/{team_id}", Flash("success", "Service account and its token deleted."))


@router.post("/teams/{team_id}/members")
async def add_members(request: Request, api: Api, team_id: str) -> Response:
    form = await request.form()
    user_ids = [v for v in form.getlist("user_id") if isinstance(v, str) and v]
    if not user_ids:
        raise FormError("Choose at least one user to add.")
    as_admin = form.get("team_admin") == "on"
    for user_id in user_ids:
        await api.directory.post(
            f"/api/teams/{q(team_id)}/members", {"user_id": user_id, "team_admin": as_admin}
        )
    noun = "member" if len(user_ids) == 1 else "members"
    return redirect(request, f"/teams/{team_id}", Flash("success", f"Added {len(user_ids)} {noun}."))


@router.post("/teams/{team_id}/members/{user_id}/promote")
async def promote_member(request: Request, api: Api, team_id: str, user_id: str) -> Response:
    await api.directory.post(f"/api/teams/{q(team_id)}/members/{q(user_id)}/promote")
    return redirect(request, f"/teams/{team_id}", Flash("success", "Promoted to Team-Admin."))


@router.post("/teams/{team_id}/members/{user_id}/demote")
async def demote_member(request: Request, api: Api, team_id: str, user_id: str) -> Response:
    await api.directory.post(f"/api/teams/{q(team_id)}/members/{q(user_id)}/demote")
    return redirect(request, f"/teams/{team_id}", Flash("success", "The member is no longer Team-Admin."))


@router.post("/teams/{team_id}/members/{user_id}/remove")
async def remove_member(request: Request, api: Api, team_id: str, user_id: str) -> Response:
    await api.directory.delete(f"/api/teams/{q(team_id)}/members/{q(user_id)}")
    return redirect(request, f"/teams/{team_id}", Flash("success", "Member removed from the team."))
