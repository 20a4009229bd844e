"""The tokens page (the landing page): list, create (value shown once), regenerate, delete."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from aqueduct_ui.application import tokens as use_cases
from aqueduct_ui.application.budgets import load_budget_state
from aqueduct_ui.domain.forms import FormError, parse_expiry, require_text
from aqueduct_ui.entrypoints.web.cookies import Flash
from aqueduct_ui.entrypoints.web.deps import Api, Context, CurrentViewer
from aqueduct_ui.entrypoints.web.render import back_url, redirect, render

__all__ = ["router"]

router = APIRouter()

_STORE_IT = "Copy it now and keep it in a password manager: it is not stored and will not be shown again."


@router.get("/")
async def tokens_page(request: Request, ctx: Context, viewer: CurrentViewer, api: Api) -> Response:
    page, budgets = await asyncio.gather(
        use_cases.load_tokens_page(api, viewer, ctx.settings.token_cap), load_budget_state(api, viewer)
    )
    return render(request, "tokens.html", tokens=page, budgets=budgets)


@router.post("/tokens")
async def create_token(
    request: Request,
    api: Api,
    name: Annotated[str, Form()] = "",
    expires_on: Annotated[str, Form()] = "",
    management: Annotated[str, Form()] = "",
) -> Response:
    token, value = await use_cases.create_token(
        api, require_text(name, "Name", 100, "name"), parse_expiry(expires_on), management == "on"
    )
    flash = Flash(
        "success", f"Token “{token.get('name', name)}” created. {_STORE_IT}", value, token.get("name")
    )
    return redirect(request, back_url(request), flash)


@router.post("/tokens/{token_id}/regenerate")
async def regenerate_token(
    request: Request,
    api: Api,
    token_id: str,
    expires_on: Annotated[str | None, Form(max_length=20)] = None,
    never: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    """A new value; the form of an expired token also gives a new expiry (a date, or "never")."""
    if expires_on is None and not never:
        token, value = await use_cases.regenerate_token(api, token_id)
    else:
        token, value = await use_cases.regenerate_token(api, token_id, _expiry(expires_on, never))
    name = token.get("name", "")
    flash = Flash("success", f"New value for “{name}”; the old one no longer works. {_STORE_IT}", value, name)
    return redirect(request, back_url(request), flash)


@router.post("/tokens/{token_id}/expiry")
async def change_expiry(
    request: Request,
    api: Api,
    token_id: str,
    expires_on: Annotated[str, Form(max_length=20)] = "",
    never: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    token = await use_cases.change_expiry(api, token_id, _expiry(expires_on, never))
    until = token.get("expires_at")
    flash = Flash(
        "success", f"“{token.get('name', '')}” " + (f"expires {until[:10]}." if until else "never expires.")
    )
    return redirect(request, back_url(request), flash)


def _expiry(expires_on: str | None, never: str) -> str | None:
    if never:
        return None
    if not (expires_on or "").strip():
        raise FormError("Pick the new expiry date, or choose “never expires”.")
    return parse_expiry(expires_on)


@router.post("/tokens/{token_id}/delete")
async def delete_token(request: Request, api: Api, token_id: str) -> Response:
    await use_cases.delete_token(api, token_id)
    return redirect(request, back_url(request), Flash("success", "Token deleted. It no longer works."))


@router.post("/terms/accept")
async def accept_terms(request: Request, api: Api, version: Annotated[str, Form()] = "") -> Response:
    await use_cases.accept_terms(api, require_text(version, "Version", 50, "version"))
    return redirect(request, "/", Flash("success", f"Thank you: terms of service {version} accepted."))
