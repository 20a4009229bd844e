"""The users pages: per-user rate limits, budgets, excluded models and per-model limits, set by the
Org-Admins of the user's org (and Admins); the limits of a user's tokens, set by Admins."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from aqueduct_ui.adapters.api import q
from aqueduct_ui.application.users import load_user_page, load_users_page
from aqueduct_ui.domain.forms import (
    BUDGET_FIELDS,
    LIMIT_FIELDS,
    parse_budgets,
    parse_limits,
    parse_model_limits,
)
from aqueduct_ui.entrypoints.web.cookies import Flash
from aqueduct_ui.entrypoints.web.deps import Api, CurrentViewer
from aqueduct_ui.entrypoints.web.render import back_url, redirect, render

__all__ = ["router"]

router = APIRouter()


@router.get("/users")
async def users_page(
    request: Request, viewer: CurrentViewer, api: Api, org_id: str | None = None
) -> Response:
    page = await load_users_page(api, viewer, org_id)
    return render(request, "users.html", data=page, limit_fields=LIMIT_FIELDS, page_section="users")


@router.post("/users/{user_id}/limits")
async def set_user_limits(request: Request, api: Api, user_id: str) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    user = await api.directory.patch(f"/api/users/{q(user_id)}", {"limits": parse_limits(form)})
    who = user.get("name") or user.get("email") or "the user"
    return redirect(request, back_url(request, "/users"), Flash("success", f"Limits of {who} saved."))


@router.get("/users/{user_id}")
async def user_page(request: Request, viewer: CurrentViewer, api: Api, user_id: str) -> Response:
    page = await load_user_page(api, viewer, user_id)
    return render(
        request,
        "user.html",
        data=page,
        limit_fields=LIMIT_FIELDS,
        budget_fields=BUDGET_FIELDS,
        page_section="users",
    )


@router.post("/users/{user_id}/budgets")
async def set_user_budgets(request: Request, api: Api, user_id: str) -> Response:
    """Budgets and excluded models: whole lists, so blanks clear what was set."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    body = {
        "budgets": parse_budgets(fields),
        "excluded_models": [v for v in form.getlist("excluded_models") if isinstance(v, str) and v],
    }
    user = await api.directory.patch(f"/api/users/{q(user_id)}", body)
    who = user.get("name") or user.get("email") or "the user"
    flash = Flash("success", f"Budgets and excluded models of {who} saved.")
    return redirect(request, f"/users/{user_id}", flash)


@router.post("/users/{user_id}/model-limits")
async def set_user_model_limits(request: Request, api: Api, user_id: str) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    user = await api.directory.patch(f"/api/users/{q(user_id)}", {"model_limits": parse_model_limits(form)})
    who = user.get("name") or user.get("email") or "the user"
    return redirect(request, f"/users/{user_id}", Flash("success", f"Per-model limits of {who} saved."))


@router.post("/users/{user_id}/tokens/{token_id}/limits")
async def set_token_limits(request: Request, api: Api, user_id: str, token_id: str) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    token = await api.directory.patch(f"/api/tokens/{q(token_id)}", {"limits": parse_limits(form)})
    flash = Flash("success", f"Limits of token {token.get('name', '')} saved.")
    return redirect(request, f"/users/{user_id}", flash)
