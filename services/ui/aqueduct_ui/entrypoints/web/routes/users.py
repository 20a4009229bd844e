"""The users page: per-user rate limits, set by the Org-Admins of the user's org (and Admins)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from aqueduct_ui.adapters.api import q
from aqueduct_ui.application.users import load_users_page
from aqueduct_ui.domain.forms import LIMIT_FIELDS, parse_limits
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
