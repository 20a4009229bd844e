"""Signing in and out: the local login form, single sign-on hand-back, sign-out."""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from aqueduct_ui.adapters.api import ApiError
from aqueduct_ui.entrypoints.web.context import WebContext
from aqueduct_ui.entrypoints.web.cookies import REFRESH_COOKIE, Flash
from aqueduct_ui.entrypoints.web.deps import Auth, Context
from aqueduct_ui.entrypoints.web.render import redirect, render, safe_next

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter()


def _sso_url(ctx: WebContext, next: str) -> str:
    base = (ctx.settings.public_auth_url or ctx.common.auth_url).rstrip("/")
    return f"{base}/auth/oidc/login?next={quote(safe_next(next), safe='')}"


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.get("/login")
async def login_page(request: Request, ctx: Context, next: str = "/") -> Response:
    if getattr(request.state, "session", None) is not None:
        return redirect(request, safe_next(next))
    sso_url = _sso_url(ctx, next)
    return render(request, "login.html", next=safe_next(next), sso_url=sso_url, username="")


@router.post("/login")
async def login(
    request: Request,
    ctx: Context,
    auth: Auth,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
) -> Response:
    try:
        pair = await auth.sign_in(username.strip(), password, client_ip(request))
    except ApiError as exc:
        if exc.status == 429:
            message = "Too many attempts. Wait a minute and try again."
        elif exc.status >= 500:
            message = "The sign-in service is unavailable. Try again shortly."
        else:
            message = "Wrong username or password."
        sso_url = _sso_url(ctx, next)
        return render(
            request,
            "login.html",
            status_code=exc.status if exc.status in (401, 429) else 400,
            next=safe_next(next),
            sso_url=sso_url,
            username=username,
            error=message,
        )
    response = redirect(request, safe_next(next))
    ctx.cookies.set_session(request, response, pair)
    return response


@router.get("/session/complete")
async def complete_sso(
    request: Request, ctx: Context, auth: Auth, code: str = "", next: str = "/"
) -> Response:
    """The auth service sends the browser here after single sign-on with a one-time code."""
    if not code:
        return redirect(request, "/session/error?message=" + quote("The sign-in link is incomplete."))
    try:
        pair = await auth.exchange(code, client_ip(request))
    except ApiError as exc:
        return redirect(request, "/session/error?message=" + quote(exc.detail))
    response = redirect(request, safe_next(next))
    ctx.cookies.set_session(request, response, pair)
    return response


@router.get("/session/error")
async def sso_error(request: Request, message: str = "Sign-in failed.") -> Response:
    return render(request, "session_error.html", status_code=400, message=message[:500])


@router.post("/logout")
async def logout(request: Request, ctx: Context, auth: Auth) -> Response:
    refresh = request.cookies.get(REFRESH_COOKIE)
    if refresh:
        try:
            await auth.sign_out(refresh, client_ip(request))
        except ApiError as exc:
            # The cookies go regardless; a refresh token that could not be revoked expires on its own.
            log.warning("could not revoke a session at sign-out: %s", exc)
    response = redirect(request, "/login", Flash("info", "You are signed out."))
    ctx.cookies.clear_session(response)
    return response
