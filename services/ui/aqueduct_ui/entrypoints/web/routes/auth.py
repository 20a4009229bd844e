"""Signing in and out: the local login form, single sign-on hand-back, sign-out."""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from aqueduct_ui.adapters.api import ApiError
from aqueduct_ui.domain.sign_in_errors import sign_in_error_message
from aqueduct_ui.entrypoints.web.context import WebContext
from aqueduct_ui.entrypoints.web.cookies import REFRESH_COOKIE, Flash
from aqueduct_ui.entrypoints.web.deps import Auth, Context
from aqueduct_ui.entrypoints.web.render import redirect, render, safe_next

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter()


# Single sign-on is bound to the browser that starts it: /login/sso gives the browser a random secret in
# this cookie (only sent back to /session/complete) and the auth service its SHA-256; the one-time code
# that ends the sign-in is exchanged only together with the secret. A code an attacker got for their own
# account therefore cannot sign a victim's browser in (login CSRF).
SSO_COOKIE = "aq_sso"
_SSO_COOKIE_PATH = "/session/complete"
_SSO_COOKIE_MAX_AGE = 15 * 60


def _sso_url(ctx: WebContext, next: str) -> str:
    return f"/login/sso?next={quote(safe_next(next), safe='')}"


def _auth_sso_url(ctx: WebContext, next: str, binding: str) -> str:
    base = (ctx.settings.public_auth_url or ctx.common.auth_url).rstrip("/")
    return f"{base}/auth/oidc/login?next={quote(safe_next(next), safe='')}&binding={binding}"


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
        if exc.code == "password_change_required":
            # An Admin's one-time password: proven, but the user chooses their own before a session.
            return render(
                request,
                "choose_password.html",
                next=safe_next(next),
                username=username.strip(),
                password=password,
            )
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


@router.post("/login/password")
async def choose_password(
    request: Request,
    ctx: Context,
    auth: Auth,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1000)],
    new_password: Annotated[str, Form(max_length=1000)],
    confirm_password: Annotated[str, Form(max_length=1000)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Replace a one-time (or the current) password, then sign in with the new one."""

    def again(message: str, status: int = 400) -> Response:
        return render(
            request,
            "choose_password.html",
            status_code=status,
            next=safe_next(next),
            username=username,
            password=password,
            error=message,
        )

    if new_password != confirm_password:
        return again("The two new passwords differ.")
    try:
        await auth.change_password(username.strip(), password, new_password, client_ip(request))
        pair = await auth.sign_in(username.strip(), new_password, client_ip(request))
    except ApiError as exc:
        if exc.status == 401:
            return again(
                "The one-time password is no longer valid. Ask your administrator for a new one.", 401
            )
        if exc.status == 429:
            return again("Too many attempts. Wait a minute and try again.", 429)
        if exc.status >= 500:
            return again("The sign-in service is unavailable. Try again shortly.", 503)
        return again(_sentence(exc.detail))
    response = redirect(request, safe_next(next))
    ctx.cookies.set_session(request, response, pair)
    return response


def _sentence(text: str) -> str:
    """An API message as a sentence: "password: at least 8 characters" -> "Password: at least 8 characters."."""
    text = text.strip() or "That did not work"
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


@router.get("/login/sso")
async def start_sso(request: Request, ctx: Context, next: str = "/") -> Response:
    """Start single sign-on: a fresh browser secret, then off to the identity provider via the auth service."""
    secret = secrets.token_urlsafe(32)
    binding = hashlib.sha256(secret.encode()).hexdigest()
    response = RedirectResponse(_auth_sso_url(ctx, next, binding), status_code=303)
    response.set_cookie(
        SSO_COOKIE,
        secret,
        max_age=_SSO_COOKIE_MAX_AGE,
        path=_SSO_COOKIE_PATH,
        httponly=True,
        samesite="lax",  # sent on the top-level redirect back from the identity provider
        secure=ctx.settings.cookie_secure
        or ctx.common.public_ui_url.startswith("https://")
        or request.url.scheme == "https",
    )
    return response


@router.get("/session/complete")
async def complete_sso(
    request: Request, ctx: Context, auth: Auth, code: str = "", next: str = "/"
) -> Response:
    """The auth service sends the browser here after single sign-on with a one-time code."""
    if not code:
        return redirect(request, "/session/error?reason=incomplete_link")
    binding = request.cookies.get(SSO_COOKIE, "")
    if not binding:
        return redirect(request, "/session/error?reason=not_started_here")
    try:
        pair = await auth.exchange(code, binding, client_ip(request))
    except ApiError as exc:
        return redirect(request, "/session/error?reason=" + quote(exc.code or "sso_failed"))
    response = redirect(request, safe_next(next))
    response.delete_cookie(SSO_COOKIE, path=_SSO_COOKIE_PATH)
    ctx.cookies.set_session(request, response, pair)
    return response


@router.get("/session/error")
async def sso_error(request: Request, reason: str = "") -> Response:
    """Only the product's own texts, chosen by reason code; any other query parameter is ignored."""
    return render(request, "session_error.html", status_code=400, message=sign_in_error_message(reason))


@router.post("/logout")
async def logout(request: Request, ctx: Context, auth: Auth) -> Response:
    refresh = request.cookies.get(REFRESH_COOKIE)
    end_session_url = ""
    if refresh:
        try:
            end_session_url = await auth.sign_out(refresh, client_ip(request))
        except ApiError as exc:
            # The cookies go regardless; a refresh token that could not be revoked expires on its own.
            log.warning("could not revoke a session at sign-out: %s", exc)
    if end_session_url:
        # A single sign-on session: on to the identity provider, which ends its own session too and
        # sends the browser back to /login (else "Sign in with SSO" would sign the user straight back in).
        request.state.session = None  # the page shows no signed-in header any more
        response = render(request, "signed_out.html", end_session_url=end_session_url)
        ctx.cookies.set_flash(request, response, Flash("info", "You are signed out."))
    else:
        response = redirect(request, "/login", Flash("info", "You are signed out."))
    ctx.cookies.clear_session(response)
    return response
