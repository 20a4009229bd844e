"""Dependencies that let handlers read like sentences: ``viewer: CurrentViewer, api: Api``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from aqueduct_ui.adapters.api import AuthApi, UserApi
from aqueduct_ui.domain.viewer import Viewer
from aqueduct_ui.entrypoints.web.context import Session, WebContext
from aqueduct_ui.entrypoints.web.cookies import CSRF_FIELD

__all__ = [
    "Api",
    "Auth",
    "Context",
    "CsrfError",
    "CurrentSession",
    "CurrentViewer",
    "SignInRequired",
    "csrf_guard",
    "get_ctx",
]

_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


class SignInRequired(Exception):
    """No valid session: the page asks the user to sign in and comes back afterwards."""


class CsrfError(Exception):
    """A form arrived without the token of this browser's CSRF cookie."""


def get_ctx(request: Request) -> WebContext:
    return request.app.state.ctx


Context = Annotated[WebContext, Depends(get_ctx)]


def get_session(request: Request) -> Session:
    session = getattr(request.state, "session", None)
    if session is None:
        raise SignInRequired()
    return session


CurrentSession = Annotated[Session, Depends(get_session)]


def get_viewer(session: CurrentSession) -> Viewer:
    return session.viewer


CurrentViewer = Annotated[Viewer, Depends(get_viewer)]


def get_api(ctx: Context, session: CurrentSession) -> UserApi:
    return ctx.user_api(session)


Api = Annotated[UserApi, Depends(get_api)]


def get_auth(ctx: Context) -> AuthApi:
    return ctx.auth


Auth = Annotated[AuthApi, Depends(get_auth)]


async def csrf_guard(request: Request, ctx: Context) -> None:
    """Every state-changing request must carry the CSRF token (form field or ``X-CSRF-Token`` header)."""
    if request.method not in _UNSAFE:
        return
    submitted = request.headers.get("x-csrf-token")
    if submitted is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        submitted = value if isinstance(value, str) else None
    if not ctx.cookies.csrf_valid(getattr(request.state, "csrf_secret", None), submitted):
        raise CsrfError()
