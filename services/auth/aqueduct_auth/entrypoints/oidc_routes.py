"""Single sign-on routes. The browser never sees an error page here: failures go to the UI's
``/session/error`` with a reason code (the UI shows its own text for it), success to ``/session/complete`` with a one-time code that the UI
exchanges server-side (``POST /auth/exchange``)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from aqueduct_auth.domain.errors import AuthError
from aqueduct_auth.entrypoints.container import ClientIp, ContainerDep
from aqueduct_auth.entrypoints.errors import error_reason

__all__ = ["router"]

router = APIRouter(tags=["single sign-on"])


class SingleSignOnOffError(AuthError):
    pass


@router.get("/auth/oidc/login")
async def oidc_login(
    request: Request, container: ContainerDep, next: str = "/", binding: str = ""
) -> RedirectResponse:
    """Redirect to the identity provider (authorization code flow with PKCE). ``binding`` is the SHA-256
    (hex) of a secret the UI gave the browser (its ``/login/sso`` sets it): the one-time code that ends
    the sign-in is only exchanged together with that secret."""
    if container.oidc is None:
        raise SingleSignOnOffError("single sign-on is not configured (AQUEDUCT_AUTH_OIDC_ISSUER)")
    try:
        return await container.oidc.login_redirect(request, next, binding)
    except AuthError as exc:
        return _to_ui(container.public_ui_url, "/session/error", reason=error_reason(exc))


@router.get("/auth/oidc/callback")
async def oidc_callback(request: Request, container: ContainerDep, ip: ClientIp) -> RedirectResponse:
    """The provider's redirect back: validate, resolve the user in the directory, hand the UI a code."""
    if container.oidc is None:
        raise SingleSignOnOffError("single sign-on is not configured (AQUEDUCT_AUTH_OIDC_ISSUER)")
    try:
        done = await container.oidc.complete(request)
        code = await container.sessions.sign_in_with_code(
            done.request, "oidc", ip, done.binding, end_session_url=done.end_session_url
        )
    except AuthError as exc:
        return _to_ui(container.public_ui_url, "/session/error", reason=error_reason(exc))
    return _to_ui(container.public_ui_url, "/session/complete", code=code, next=done.next_path)


def _to_ui(base: str, path: str, **params: str) -> RedirectResponse:
    return RedirectResponse(f"{base.rstrip('/')}{path}?{urlencode(params)}", status_code=303)
