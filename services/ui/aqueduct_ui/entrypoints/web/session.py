"""Per-request session handling: verify the session cookie locally, refresh it transparently, keep the
CSRF secret and the flash message on ``request.state`` for the pages."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from aqueduct_libs.sessions import InvalidSessionError, SessionClaims
from aqueduct_ui.adapters.api import ApiError
from aqueduct_ui.entrypoints.web.context import Session, WebContext
from aqueduct_ui.entrypoints.web.cookies import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    FLASH_COOKIE,
    REFRESH_COOKIE,
)

__all__ = ["SessionMiddleware", "verify_session"]

log = logging.getLogger(__name__)

_PASS_THROUGH = ("/static/", "/healthz", "/readyz", "/metrics")

# Pages may carry a token value shown once: never cached, never framed, no third-party anything.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self' {auth}; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


async def verify_session(ctx: WebContext, token: str) -> SessionClaims:
    """Verify locally; when the key is unknown (rotation not yet seen), reload the keys once and retry."""
    try:
        return ctx.keyring.verifier.verify(token)
    except InvalidSessionError as exc:
        if "unknown key" not in str(exc) or not await ctx.keyring.fetch_over_http():
            raise
    return ctx.keyring.verifier.verify(token)


def _sets_cookie(response: Response, name: str) -> bool:
    prefix = f"{name}="
    return any(value.startswith(prefix) for value in response.headers.getlist("set-cookie"))


class SessionMiddleware(BaseHTTPMiddleware):
    def __init__(self, app: ASGIApp, ctx: WebContext) -> None:
        super().__init__(app)
        self.ctx = ctx

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path.startswith(_PASS_THROUGH):
            return await call_next(request)
        kit = self.ctx.cookies
        csrf_secret = request.cookies.get(CSRF_COOKIE)
        new_csrf = None if csrf_secret else kit.new_csrf_secret()
        request.state.csrf_secret = csrf_secret or new_csrf
        request.state.flash = kit.unseal(request.cookies.get(FLASH_COOKIE))
        request.state.flash_shown = False
        session, renewed, stale = await self._resolve(request)
        if session is not None:
            session = await self.ctx.with_current_roles(session)
        request.state.session = session

        response = await call_next(request)
        if request.method != "GET" and response.status_code < 400:
            self.ctx.roles.forget()  # a change went through: anyone's roles may differ now

        # A route that signs in or out sets the session cookies itself; never overwrite its decision.
        if not _sets_cookie(response, ACCESS_COOKIE):
            if renewed is not None:
                kit.set_session(request, response, renewed)
            elif stale:
                kit.clear_access(response)
        if new_csrf:
            kit.set_csrf(request, response, new_csrf)
        if request.state.flash_shown and not _sets_cookie(response, FLASH_COOKIE):
            kit.clear_flash(response)
        for name, value in _PAGE_HEADERS.items():
            response.headers.setdefault(name, value.format(auth=self.ctx.common.auth_url.rstrip("/")))
        return response

    async def _resolve(self, request: Request) -> tuple[Session | None, dict | None, bool]:
        """(session, renewed token pair to store, whether the access cookie is dead and must go)."""
        access = request.cookies.get(ACCESS_COOKIE)
        refresh = request.cookies.get(REFRESH_COOKIE)
        if access:
            try:
                return Session(access, await verify_session(self.ctx, access)), None, False
            except InvalidSessionError:
                pass
        if not refresh:
            return None, None, bool(access)
        try:
            pair = await self.ctx.auth.refresh(refresh, request.client.host if request.client else None)
            claims = await verify_session(self.ctx, pair["access_token"])
        except ApiError as exc:
            if exc.status >= 500:
                log.warning("could not refresh a session: %s", exc)
            return None, None, bool(access)
        except (InvalidSessionError, KeyError):
            return None, None, bool(access)
        return Session(pair["access_token"], claims), pair, False
