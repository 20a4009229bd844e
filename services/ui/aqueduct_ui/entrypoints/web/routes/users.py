"""The users pages: per-user rate limits, budgets, excluded models and per-model limits, set by the
Org-Admins of the user's org (and Admins); the limits of a user's tokens, set by Admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import Response

from aqueduct_ui.adapters.api import q
from aqueduct_ui.application.users import load_user_page, load_users_page
from aqueduct_ui.domain.forms import (
    BUDGET_FIELDS,
    LIMIT_FIELDS,
    FormError,
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
    request: Request,
    viewer: CurrentViewer,
    api: Api,
    org_id: str | None = None,
    q: Annotated[str, Query(max_length=200)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    deactivated: bool = False,
) -> Response:
    data = await load_users_page(api, viewer, org_id, q, page, deactivated)
    return render(request, "users.html", data=data, limit_fields=LIMIT_FIELDS, page_section="users")


@router.post("/users")
async def add_user(
    request: Request,
    viewer: CurrentViewer,
    api: Api,
    org_id: Annotated[str, Form(max_length=100)],
    email: Annotated[str, Form(max_length=320)],
    name: Annotated[str, Form(max_length=200)] = "",
    username: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Add a user to the org; with a username (Admins) also a local account with a one-time password,
    shown on the answer page only (never in a cookie or a redirect)."""
    org = await api.directory.get(f"/api/orgs/{q(org_id)}")
    body = {"org_id": org_id, "email": email.strip(), "name": name.strip() or email.strip()}
    user = await api.directory.post("/api/users", body)
    who = user.get("name") or user.get("email")
    if not username.strip():
        flash = Flash("success", f"{who} added. They sign in with single sign-on using {user.get('email')}.")
        return redirect(request, f"/users/{user['id']}", flash)
    if not viewer.admin or api.auth is None:
        raise FormError("Only an Admin can create local accounts.")
    account = await api.auth.post(
        "/auth/local-users",
        {
            "username": username.strip(),
            "email": user["email"],
            "name": who,
            "groups": [org["sso_group"]] if org.get("sso_group") else [],
        },
    )
    return render(
        request,
        "one_time_password.html",
        page_section="users",
        user=user,
        username=account["username"],
        password=account["one_time_password"],
        reason="created",
    )


@router.post("/users/{user_id}/roles")
async def set_user_roles(request: Request, viewer: CurrentViewer, api: Api, user_id: str) -> Response:
    """Grant or revoke Org-Admin (Org-Admins) and Admin (Admins): the form sends the wanted state."""
    form = await request.form()
    body = {"org_admin": form.get("org_admin") == "on"}
    if viewer.admin:
        body["admin"] = form.get("admin") == "on"
    user = await api.directory.patch(f"/api/users/{q(user_id)}", body)
    roles = ", ".join(user.get("roles") or ["User"])
    return redirect(request, f"/users/{user_id}", Flash("success", f"Roles of {user.get('name')}: {roles}."))


@router.post("/users/{user_id}/deactivate")
async def deactivate_user(request: Request, api: Api, user_id: str) -> Response:
    await api.directory.delete(f"/api/users/{q(user_id)}")
    flash = Flash("success", "User deactivated: they cannot sign in and their tokens are refused.")
    return redirect(request, f"/users/{user_id}", flash)


@router.post("/users/{user_id}/reactivate")
async def reactivate_user(request: Request, api: Api, user_id: str) -> Response:
    user = await api.directory.post(f"/api/users/{q(user_id)}/reactivate")
    flash = Flash("success", f"{user.get('name')} reactivated: their unexpired tokens work again.")
    return redirect(request, f"/users/{user_id}", flash)


@router.post("/users/{user_id}/reset-password")
async def reset_password(request: Request, viewer: CurrentViewer, api: Api, user_id: str) -> Response:
    # Auth decides on the session's claims (an Admin's until the access token expires): the viewer's
    # current roles refuse a demoted Admin at once.
    if not viewer.admin:
        raise FormError("Only an Admin can reset passwords.")
    page = await load_user_page(api, viewer, user_id)
    if page.local_username is None or api.auth is None:
        raise FormError("This user signs in with single sign-on: there is no password to reset.")
    answer = await api.auth.post(f"/auth/local-users/{q(page.local_username)}/reset-password")
    return render(
        request,
        "one_time_password.html",
        page_section="users",
        user=page.user,
        username=answer["username"],
        password=answer["one_time_password"],
        reason="reset",
    )


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
