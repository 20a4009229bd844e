"""The one place where errors become HTTP answers: problem documents ``{"detail", "code"}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from aqueduct_auth.adapters.jupyterhub import HubTokenInvalidError, HubUnavailableError
from aqueduct_auth.domain import errors
from aqueduct_auth.entrypoints.container import NotSignedInError

__all__ = ["add_error_handlers", "error_reason"]

_STATUS: list[tuple[type[errors.AuthError], int, str]] = [
    (errors.InvalidCredentialsError, 401, "invalid_credentials"),
    (errors.RefreshTokenInvalidError, 401, "invalid_refresh_token"),
    (errors.ExchangeCodeInvalidError, 401, "invalid_code"),
    (NotSignedInError, 401, "not_signed_in"),
    (HubTokenInvalidError, 401, "invalid_jupyterhub_token"),
    (HubUnavailableError, 503, "jupyterhub_unavailable"),
    (errors.NotAllowedError, 403, "forbidden"),
    (errors.PasswordChangeRequiredError, 403, "password_change_required"),
    (errors.NoSuchAccountError, 404, "not_found"),
    (errors.SignInRefusedError, 403, "sign_in_refused"),
    (errors.AccountExistsError, 409, "conflict"),
    (errors.InvalidFieldError, 422, "invalid_field"),
    (errors.SignInRateLimitedError, 429, "rate_limited"),
    (errors.DirectoryUnavailableError, 503, "directory_unavailable"),
    (errors.SingleSignOnError, 400, "sso_failed"),
]


def error_reason(exc: errors.AuthError) -> str:
    """A code for the UI's sign-in error page (``/session/error?reason=``), which shows its own text for
    it: never the message itself, so nobody can put words of their choosing on the product's page."""
    reason = getattr(exc, "reason", "")
    return reason or next((c for kind, _, c in _STATUS if isinstance(exc, kind)), "sso_failed")


def _problem(exc: errors.AuthError) -> JSONResponse:
    status, code = next(((s, c) for kind, s, c in _STATUS if isinstance(exc, kind)), (400, "bad_request"))
    headers = {}
    if isinstance(exc, errors.SignInRateLimitedError):
        headers["Retry-After"] = str(exc.retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = {"detail": exc.message, "code": code}
    if isinstance(exc, errors.InvalidFieldError):
        body["field"] = exc.field
    return JSONResponse(body, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.AuthError)
    async def on_auth_error(request: Request, exc: errors.AuthError) -> JSONResponse:
        return _problem(exc)

    @app.exception_handler(RequestValidationError)
    async def on_bad_input(request: Request, exc: RequestValidationError) -> JSONResponse:
        # 422 naming the field, as the directory answers (and FastAPI by default).
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        detail = (
            f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid input"))
        )
        body = {"detail": detail, "code": "bad_request"} | ({"field": where} if where else {})
        return JSONResponse(body, status_code=422)
